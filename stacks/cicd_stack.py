"""CI/CD: a CDK Pipelines pipeline in the tooling account that deploys the environments of the promotion chain
in order.

Each environment may be its own account: the pipeline uses cross-account KMS keys and the CDK bootstrap roles
of the target accounts (bootstrap them with `--trust <tooling account>`). A person approves (a CodePipeline
manual approval) before every environment with `manual_approval: true` in the config. `gates(environment_name,
source)` is the hook where the model-promotion gates plug in (infra/constructs/promotion_gate.py: one per model):
the steps it returns run before that environment's stage is deployed (`source`: the repository checkout).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from aws_cdk import Stack, pipelines
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.build.nag import KMS_GRANT_ACTIONS, S3_GRANT_ACTIONS, regex, suppress
from infra.config import Cicd
from infra.constructs.secure_bucket import AccessLogsBucket
from stacks.stage import ModelGateStage

GateFactory = Callable[[str, pipelines.IFileSetProducer], Sequence[pipelines.Step]]

# CodePipeline's fixed quotas (User Guide, "Quotas in AWS CodePipeline"): 2..50 stages a pipeline, 1..50 actions a
# stage, stage names of at most 100 of [A-Za-z0-9.@_-]. CDK Pipelines splits an environment's actions into stages
# of 50 (`<stage>.1`, `<stage>.2`, ...), so a platform of many models x environments reaches the stage quota first.
MAX_STAGES, MAX_ACTIONS, MAX_STAGE_NAME = 50, 50, 100
STAGE_NAME = re.compile(r"[A-Za-z0-9.@_-]+")


class PipelineQuotaError(ValueError):
    """The CI/CD pipeline this config makes would be refused by CodePipeline."""


def quota_problems(stages: Sequence[tuple[str, int]]) -> list[str]:
    """What CodePipeline would refuse in a pipeline of `stages` (name, number of actions), in order."""
    problems = []
    if not 2 <= len(stages) <= MAX_STAGES:
        problems.append(f"{len(stages)} stages (CodePipeline allows 2 to {MAX_STAGES} in a pipeline)")
    for name, actions in stages:
        if not 1 <= actions <= MAX_ACTIONS:
            problems.append(f"stage {name!r} has {actions} actions (1 to {MAX_ACTIONS} allowed)")
        if len(name) > MAX_STAGE_NAME or not STAGE_NAME.fullmatch(name):
            problems.append(f"stage name {name!r} is not 1-{MAX_STAGE_NAME} of A-Z a-z 0-9 . @ _ -")
    return problems


class CicdStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cicd: Cicd,
        stages: Sequence[ModelGateStage],
        gates: GateFactory | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self._source_action_id = cicd.repository.replace("/", "_")
        source = pipelines.CodePipelineSource.connection(
            cicd.repository, cicd.branch, connection_arn=cicd.connection_arn
        )
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            cross_account_keys=True,  # target environments may be other accounts
            enable_key_rotation=True,
            docker_enabled_for_synth=False,  # Lambda bundling is Docker-free (infra/build/lambda_bundle.py)
            synth=pipelines.ShellStep(
                "Synth",
                input=source,
                # The same entry points a person uses: the Makefile makes the venv and installs the pinned CLI.
                commands=["make synth"],
                primary_output_directory="cdk.out",
            ),
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(build_image=codebuild.LinuxBuildImage.STANDARD_7_0)
            ),
        )

        self._gate_steps: list[tuple[str, str]] = []  # (stage, step id) of CodeBuild gate steps, for nag
        for stage in stages:
            name = stage.settings.name
            pre: list[pipelines.Step] = []
            if stage.settings.manual_approval:
                pre.append(pipelines.ManualApprovalStep(f"Approve-{name}", comment=f"Deploy ModelGate to {name}?"))
            if gates is not None:
                steps = list(gates(name, source))
                pre.extend(steps)
                self._gate_steps.extend(
                    (stage.stage_name, step.id) for step in steps if isinstance(step, pipelines.CodeBuildStep)
                )
            self.pipeline.add_stage(stage, pre=pre)

        # Build now so that nag sees (and suppressions can address) the generated CodeBuild/CodePipeline resources.
        self.pipeline.build_pipeline()
        self._check_quotas(len(stages))
        self._use_connection_with_its_own_prefix(cicd.connection_arn)
        self._log_artifact_access()
        self._suppress_generated_wildcards()

    def _check_quotas(self, environments: int) -> None:
        """Refuse at synth the pipeline CodePipeline would refuse at deploy (after a long first synth and build)."""
        built = self.pipeline.pipeline
        problems = quota_problems([(stage.stage_name, len(stage.actions)) for stage in built.stages])
        if problems:
            raise PipelineQuotaError(
                f"the CI/CD pipeline {self.node.path} of {environments} environment(s) would be refused by "
                f"CodePipeline: {'; '.join(problems)}. Each model adds its stacks to every environment's stage "
                "(CDK Pipelines makes a stage per 50 actions): deploy fewer models or environments per pipeline, "
                "e.g. split the config's models over two config files with their own `project.name` (two pipelines; "
                "`-c config=<file>`)."
            )

    def _use_connection_with_its_own_prefix(self, connection_arn: str) -> None:
        """CDK grants `codestar-connections:UseConnection` whatever the ARN; a CodeConnections ARN
        (`arn:aws:codeconnections:`) only matches `codeconnections:` actions (IAM service prefixes; cfn-lint I3510),
        so the source stage could not use the connection. Grant the action of the ARN's own service."""
        service = connection_arn.split(":")[2]
        role = self.node.find_child("Pipeline").node.find_child("Pipeline").node.find_child("Source")
        role = role.node.find_child(self._source_action_id).node.find_child("CodePipelineActionRole")
        policy = role.node.find_child("DefaultPolicy").node.default_child
        document = self.resolve(policy.policy_document)
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            renamed = [
                f"{service}:UseConnection" if action == "codestar-connections:UseConnection" else action
                for action in actions
            ]
            statement["Action"] = renamed if len(renamed) > 1 else renamed[0]
        policy.add_property_override("PolicyDocument", document)

    def _log_artifact_access(self) -> None:
        """CDK Pipelines creates its artifact bucket without access logs; add them (AwsSolutions-S1)."""
        artifacts = self.pipeline.pipeline.artifact_bucket
        logs = AccessLogsBucket(self, "AccessLogs")
        cfn_bucket = artifacts.node.default_child
        cfn_bucket.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(
            destination_bucket_name=logs.bucket_name, log_file_prefix="pipeline-artifacts/"
        )
        logs.add_to_resource_policy(
            iam.PolicyStatement(
                sid="S3ServerAccessLogsPolicy",
                principals=[iam.ServicePrincipal("logging.s3.amazonaws.com")],
                actions=["s3:PutObject"],
                resources=[logs.arn_for_objects("pipeline-artifacts/*")],
                conditions={
                    "ArnLike": {"aws:SourceArn": artifacts.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": self.account},
                },
            )
        )

    def _suppress_generated_wildcards(self) -> None:
        artifacts = [
            *S3_GRANT_ACTIONS,
            *KMS_GRANT_ACTIONS,
            regex(r"Resource::<PipelineArtifactsBucket[0-9A-F]{8}\.Arn>\/\*"),
        ]
        reason = (
            "Generated by CDK Pipelines: read/write of the pipeline's own artifact bucket and its KMS key, "
            "scoped to that bucket's objects."
        )
        codebuild_logs = [
            regex(r"Resource::arn:aws:logs:[a-z0-9-]+:\d{12}:log-group:\/aws\/codebuild\/<Pipeline\w+>:\*"),
            regex(r"Resource::arn:aws:codebuild:[a-z0-9-]+:\d{12}:report-group\/<Pipeline\w+>-\*"),
        ]
        for path in (
            "Pipeline/Pipeline/Role/DefaultPolicy/Resource",
            f"Pipeline/Pipeline/Source/{self._source_action_id}/CodePipelineActionRole/DefaultPolicy/Resource",
        ):
            suppress(self, path, {"AwsSolutions-IAM5": reason}, {"AwsSolutions-IAM5": artifacts})
        suppress(
            self,
            "Pipeline/Pipeline/Build/Synth/CdkBuildProject/Role/DefaultPolicy/Resource",
            {"AwsSolutions-IAM5": reason + " Plus this build's own log streams and test report groups."},
            {"AwsSolutions-IAM5": [*artifacts, *codebuild_logs]},
        )
        for stage_name, step_id in self._gate_steps:
            suppress(
                self,
                f"Pipeline/Pipeline/{stage_name}/{step_id}/{step_id}/Role/DefaultPolicy/Resource",
                {"AwsSolutions-IAM5": reason + " Plus this gate build's own log streams and test report groups."},
                {"AwsSolutions-IAM5": [*artifacts, *codebuild_logs]},
            )
        if self.node.try_find_child("Pipeline").node.try_find_child("Assets") is not None:
            # Stages with file assets (Lambda code and layers) get an asset-publishing CodeBuild role.
            suppress(
                self,
                "Pipeline/Assets/FileRole/DefaultPolicy/Resource",
                {
                    "AwsSolutions-IAM5": reason + " Plus its own CodeBuild log groups and report groups, and "
                    "codebuild:BatchGetBuilds/StartBuild/StopBuild (Resource::*), as CDK Pipelines generates it "
                    "for the asset-publishing project."
                },
                {
                    "AwsSolutions-IAM5": [
                        *artifacts,
                        regex(r"Resource::arn:aws:logs:[a-z0-9-]+:\d{12}:log-group:\/aws\/codebuild\/\*"),
                        regex(r"Resource::arn:aws:codebuild:[a-z0-9-]+:\d{12}:report-group\/\*"),
                        "Resource::*",
                    ]
                },
            )
        suppress(
            self,
            "Pipeline/UpdatePipeline/SelfMutation/Role/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": reason
                + " Self-mutation must assume the CDK bootstrap roles (iam role/*, conditioned on the"
                " aws-cdk:bootstrap-role tag by CDK) and describe stacks / list buckets in target accounts (*)."
            },
            {
                "AwsSolutions-IAM5": [
                    *artifacts,
                    *codebuild_logs,
                    regex(r"Resource::arn:\*:iam::\d{12}:role\/\*"),
                    "Resource::*",
                ]
            },
        )
