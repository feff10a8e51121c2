"""The training pipeline of one model in one environment (stateless): the SageMaker Pipeline and, when the model's
`prep.engine` is `glue` there, the Glue job and its callback Lambdas. Data and key are the environment's Storage
stack's; the model package group is the model's, in the first environment of the chain.

One stack per (model, environment), not one construct per model in a shared stack: a pipeline stack has 9
resources, 37 with the Glue prep engine (its queues, two Lambdas, alarms), so a shared stack would reach
CloudFormation's 500-resource limit at 13 Glue models; and a stack per model deploys, fails and rolls back
alone, so onboarding a model never touches another model's pipeline."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.build.lambda_bundle import dependencies_layer
from infra.build.nag import KMS_GRANT_ACTIONS, S3_GRANT_ACTIONS, regex, suppress
from infra.config import Environment, ModelProject, Project
from infra.constructs.glue_prep import GluePrep
from infra.constructs.training_pipeline import TrainingPipeline
from infra.triton_images import image_uri
from modelgate.parameters import pipeline_name
from pipelines.definition_inputs import DefinitionSettings
from stacks.storage_stack import StorageStack


def definition_settings(
    model: ModelProject, environment: Environment, model_package_group_arn: str | None = None
) -> DefinitionSettings:
    """`environment`: the model's resolved settings there (`model.environments[name]`).
    `model_package_group_arn`: the registry group when it lives in another account or region (registration
    then names it by ARN, which CreateModelPackage accepts cross-account); by name otherwise."""
    in_place = f":{environment.region}:{environment.account}:"
    group = model.model_package_group
    return DefinitionSettings(
        region=environment.region,
        model_package_group=model_package_group_arn
        if model_package_group_arn and in_place not in model_package_group_arn
        else group,
        prep_engine=environment.prep.engine,
        processing_instance_type=environment.prep.processing_instance_type,
        training_instance_type=environment.training.instance_type,
        training_instance_count=environment.training.instance_count,
        max_runtime_seconds=environment.training.max_runtime_minutes * 60,
        metric_threshold=environment.training.metric_threshold,
        triton_image_uri=image_uri(environment.region, environment.serving.triton_version),
        inference_instance_type=environment.serving.instance_type,
        raw_prefix=f"readings/{model.name}/",  # each model trains on its own readings
    )


class PipelineStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        model: ModelProject,
        environment: str,
        storage: StorageStack,
        model_package_group_arn: str,
        **kwargs,
    ) -> None:
        """`environment`: the environment's name; the model's settings there are `model.environments[environment]`.
        `model_package_group_arn`: the model's Model Registry group (maybe in another account, stacks/topology.py)."""
        super().__init__(scope, construct_id, **kwargs)
        self.model = model
        environment_settings = model.environments[environment]
        settings = definition_settings(model, environment_settings, model_package_group_arn)
        data = {
            "key": storage.key,
            "raw_data": storage.raw_data,
            "curated_data": storage.curated_data,
            "artifacts": storage.artifacts,
        }
        self.glue_prep: GluePrep | None = None
        if settings.prep_engine == "glue":
            self.glue_prep = GluePrep(
                self,
                "GluePrep",
                **data,
                layer=dependencies_layer(self),
                glue_version=environment_settings.prep.glue_version,
                worker_type=environment_settings.prep.glue_worker_type,
                workers=environment_settings.prep.glue_workers,
                timeout_minutes=environment_settings.training.max_runtime_minutes,
                notify=environment_settings.approvers.emails,
            )
        self.training = TrainingPipeline(
            self,
            "Training",
            settings=settings,
            **data,
            model_package_group_arn=model_package_group_arn,
            pipeline_name=pipeline_name(project.name, model.name, environment),
            glue_requests=self.glue_prep.requests if self.glue_prep else None,
        )
        if self.glue_prep:
            self.glue_prep.answer_pipeline(self.training.pipeline_arn)
        # What a data scientist needs to start a run (`modelgate pipeline start`, README "Training pipeline").
        CfnOutput(self, "PipelineName", value=self.training.pipeline_name)
        CfnOutput(self, "RawBucket", value=storage.raw_data.bucket_name)
        self._suppress_reviewed_wildcards()

    def _suppress_reviewed_wildcards(self) -> None:
        """Each wildcard below is scoped as far as IAM allows; anything new still fails the nag test."""
        s3_grants = (*S3_GRANT_ACTIONS, *KMS_GRANT_ACTIONS)

        def objects(*buckets: str) -> list:
            return [regex(rf"Resource::<{bucket}[0-9A-F]{{8}}\.Arn>\/\*") for bucket in buckets]

        def logs(group: str) -> object:
            return regex(rf"Resource::arn:aws:logs:[a-z0-9-]+:\d{{12}}:log-group:{group}")

        job_reason = (
            "SageMaker job role: CDK grant_* on the environment's data buckets (objects of those buckets only) and "
            "its KMS key; its own CloudWatch log group's streams (named after the job, unknown before it runs); "
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData (conditioned on the /aws/sagemaker/ namespaces) "
            "have no resource-level permissions (Resource::*)."
        )
        roles = {
            "Training/TrainingRole": (["CuratedData", "Artifacts"], r"\/aws\/sagemaker\/TrainingJobs:\*"),
            "Training/EvaluationRole": (["CuratedData", "Artifacts"], r"\/aws\/sagemaker\/ProcessingJobs:\*"),
        }
        if self.training.prep_role is not None:
            roles["Training/PrepRole"] = (
                ["RawData", "CuratedData", "Artifacts"],
                r"\/aws\/sagemaker\/ProcessingJobs:\*",
            )
        for path, (buckets, group) in roles.items():
            suppress(
                self,
                f"{path}/DefaultPolicy/Resource",
                {"AwsSolutions-IAM5": job_reason},
                {"AwsSolutions-IAM5": [*s3_grants, *objects(*buckets), logs(group), "Resource::*"]},
            )
        suppress(
            self,
            "Training/ExecutionRole/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "Pipeline execution role: SageMaker Pipelines names the jobs it starts "
                "pipelines-<execution>-<step>-<suffix> at run time (processing-job/pipelines-*, "
                "training-job/pipelines-*); model package versions get their number at registration "
                "(model-package/<group>/*); the evaluation report is read from <execution>/evaluation/ of the "
                "artifacts bucket (CDK grant_read with that key pattern); the Glue request queue's KMS grant."
            },
            {
                "AwsSolutions-IAM5": [
                    *s3_grants,
                    regex(r"Resource::<Artifacts[0-9A-F]{8}\.Arn>\/\*\/evaluation\/\*"),
                    regex(r"Resource::arn:aws:sagemaker:[a-z0-9-]+:\d{12}:(processing|training)-job\/pipelines-\*"),
                    regex(r"Resource::arn:aws:sagemaker:[a-z0-9-]+:\d{12}:model-package\/[a-z0-9-]+\/\*"),
                ]
            },
        )
        if self.glue_prep is None:
            return
        suppress(
            self,
            "GluePrep/JobRole/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "Glue job role: CDK grant_* on the raw, curated and artifacts buckets (their "
                "objects only) and the KMS key of the security configuration; Glue's log groups /aws-glue/* (named "
                "by Glue after the security configuration and role); cloudwatch:PutMetricData has no resource-level "
                "permissions (Resource::*, conditioned on the Glue namespace)."
            },
            {
                "AwsSolutions-IAM5": [
                    *s3_grants,
                    *objects("RawData", "CuratedData", "Artifacts"),
                    logs(r"\/aws-glue\/\*"),
                    "Resource::*",
                ]
            },
        )
        for function in ("Start", "Finish"):
            suppress(
                self,
                f"GluePrep/{function}/Role/DefaultPolicy/Resource",
                {
                    "AwsSolutions-IAM5": "Answers the CallbackStep of this pipeline's executions only: execution ARNs "
                    "(pipeline/<this pipeline>/execution/<id>) exist only at run time."
                },
                {
                    "AwsSolutions-IAM5": [
                        regex(r"Resource::arn:aws:sagemaker:[a-z0-9-]+:\d{12}:pipeline\/[a-z0-9-]+\/execution\/\*")
                    ]
                },
            )
