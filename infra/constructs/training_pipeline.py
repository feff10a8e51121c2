"""The SageMaker Pipeline (AWS::SageMaker::Pipeline) that trains, evaluates, packages and registers the models.

Its definition comes from pipelines/definition.py (sagemaker SDK, built at synth, cached:
infra/build/pipeline_assets.py) with placeholders that this construct replaces with CloudFormation references: the
buckets, the KMS key, the step roles, the code bundle asset and (Glue engine) the CallbackStep's queue.

Roles, least privilege, one per kind of work:
- Pipeline: the execution role SageMaker Pipelines assumes to start jobs named `pipelines-*`, pass the step
  roles to SageMaker only, read the evaluation report (PropertyFile), register into the model package group
  and, with Glue, send the CallbackStep message.
- Prep (Processing engine): reads raw data, writes curated data and the prep report.
- Training: reads curated data, reads/writes checkpoints, writes the model artifact.
- Evaluation (evaluate + package): reads the model artifact and curated data, writes reports and archives.
Every job role reads the code bundle, pulls the PyTorch image, and writes its own CloudWatch logs and metrics.
"""

from __future__ import annotations

import json
import re

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as assets
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.build.pipeline_assets import code_bundle, pipeline_definition
from pipelines.definition_inputs import DefinitionSettings, substitute

_IMAGE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<repository>[^:@]+)")


def container_images(definition: dict) -> list[str]:
    """Every image the pipeline's jobs run (processing ImageUri, TrainingImage), sorted."""
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("ImageUri", "TrainingImage") and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(definition)
    return sorted(found)


def repository_arns(images: list[str]) -> list[str]:
    """The ECR repositories of `images` (AWS's Deep Learning Containers account in the region), exactly."""
    arns = set()
    for image in images:
        match = _IMAGE.match(image)
        if not match:
            raise ValueError(f"not an ECR image URI: {image!r}")
        arns.add(f"arn:aws:ecr:{match['region']}:{match['account']}:repository/{match['repository']}")
    return sorted(arns)


def grant_read_object(role: iam.IRole, asset: assets.Asset) -> None:
    """Read access to this one asset object (Asset.grant_read would open the whole bootstrap bucket). The jobs
    take it as an `S3DataType: S3Prefix` input, which SageMaker downloads by listing the prefix first: so also
    s3:ListBucket on the bucket, for exactly that prefix (the object's key)."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[f"arn:aws:s3:::{asset.s3_bucket_name}/{asset.s3_object_key}"]
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[f"arn:aws:s3:::{asset.s3_bucket_name}"],
            conditions={"StringEquals": {"s3:prefix": asset.s3_object_key}},
        )
    )


class TrainingPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DefinitionSettings,
        key: kms.IKey,
        raw_data: s3.IBucket,
        curated_data: s3.IBucket,
        artifacts: s3.IBucket,
        model_package_group_arn: str,
        pipeline_name: str,
        glue_requests: sqs.IQueue | None = None,
    ) -> None:
        """`pipeline_name`: modelgate.parameters.pipeline_name, the name the CLI derives too."""
        super().__init__(scope, construct_id)
        if (settings.prep_engine == "glue") != (glue_requests is not None):
            raise ValueError("the Glue prep engine needs its request queue, and only it does")
        stack = Stack.of(self)
        self.settings = settings
        code = assets.Asset(self, "Code", path=str(code_bundle()))
        template = pipeline_definition(settings)
        repositories = repository_arns(container_images(json.loads(template)))

        def job_role(name: str, log_group: str) -> iam.Role:
            role = iam.Role(self, name, assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
            grant_read_object(role, code)
            key.grant_encrypt_decrypt(role)  # volumes and outputs are encrypted with the data key
            # VolumeKmsKeyId: SageMaker creates the EBS volume's grant on the key as the job role.
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["kms:CreateGrant"],
                    resources=[key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                )
            )
            role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    resources=repositories,  # AWS's Deep Learning Containers, exactly those the steps run
                )
            )
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=[
                        "logs:CreateLogGroup",
                        "logs:CreateLogStream",
                        "logs:PutLogEvents",
                        "logs:DescribeLogStreams",
                    ],
                    resources=[
                        stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name=f"/aws/sagemaker/{log_group}:*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    ],
                )
            )
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
                )
            )
            return role

        self.training_role = job_role("TrainingRole", "TrainingJobs")
        curated_data.grant_read(self.training_role)
        artifacts.grant_read_write(self.training_role)  # checkpoints are read back to resume

        self.evaluation_role = job_role("EvaluationRole", "ProcessingJobs")
        curated_data.grant_read(self.evaluation_role)
        artifacts.grant_read_write(self.evaluation_role)

        step_roles = [self.training_role, self.evaluation_role]
        values = {
            "RawBucket": raw_data.bucket_name,
            "CuratedBucket": curated_data.bucket_name,
            "ArtifactsBucket": artifacts.bucket_name,
            "KmsKeyArn": key.key_arn,
            "TrainingRoleArn": self.training_role.role_arn,
            "EvaluationRoleArn": self.evaluation_role.role_arn,
            "CodeBucket": code.s3_bucket_name,
            "CodeKey": code.s3_object_key,
        }
        self.prep_role: iam.Role | None = None
        if settings.prep_engine == "processing":
            self.prep_role = job_role("PrepRole", "ProcessingJobs")
            raw_data.grant_read(self.prep_role)
            curated_data.grant_put(self.prep_role)
            artifacts.grant_put(self.prep_role)
            step_roles.append(self.prep_role)
            values["PrepRoleArn"] = self.prep_role.role_arn
        else:
            values["GlueQueueUrl"] = glue_requests.queue_url

        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="ModelGate training pipeline: runs the steps",
        )
        jobs = [
            stack.format_arn(service="sagemaker", resource=kind, resource_name="pipelines-*")
            for kind in ("processing-job", "training-job")
        ]
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob",
                    "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                ],
                resources=jobs,
            )
        )  # fmt: skip
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[role.role_arn for role in step_roles],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:AddTags"],
                resources=[
                    model_package_group_arn,
                    # Versions of this group only (ARNs carry the group name in lower case); the group may be in
                    # the registry environment's account (stacks/topology.py).
                    model_package_group_arn.replace(":model-package-group/", ":model-package/").lower() + "/*",
                ],
            )
        )
        # Jobs run with the step roles; the pipeline itself only creates grants on the key for their volumes and
        # reads the evaluation report (PropertyFile).
        key.grant(self.role, "kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt")
        artifacts.grant_read(self.role, "*/evaluation/*")  # the evaluation report, for the PropertyFile
        if glue_requests is not None:
            glue_requests.grant_send_messages(self.role)

        # Pipeline ARNs carry the name in lower case (config names are lower case already).
        self.pipeline_name = pipeline_name.lower()
        self.pipeline_arn = stack.format_arn(service="sagemaker", resource="pipeline", resource_name=self.pipeline_name)
        self.definition = substitute(template, values)
        self.pipeline = sagemaker.CfnPipeline(
            self,
            "Pipeline",
            pipeline_name=self.pipeline_name,
            pipeline_display_name=self.pipeline_name,
            pipeline_description=(
                f"ModelGate: prep ({settings.prep_engine}) -> GPU training -> evaluation -> "
                f"MAPE-ratio gate -> Triton packaging -> registration in {settings.model_package_group}"
            ),
            role_arn=self.role.role_arn,
            pipeline_definition={"PipelineDefinitionBody": self.definition},
        )
        self.pipeline.node.add_dependency(self.role)
