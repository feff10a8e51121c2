"""A SageMaker multi-model endpoint running NVIDIA's Triton image on GPU, autoscaled and alarmed.

One per (model group, environment). The model is `Mode: MultiModel` with `ModelDataUrl` = the group's prefix in
the environment's model-repository bucket (`models/<group>/`, modelgate/serving/deployment.py): every archive
the group's deploy step puts there is servable by `TargetModel` without touching the endpoint, and the
execution role reads nothing outside that prefix (no other group's archives). Scaling tracks invocations per
instance and GPU utilisation (whichever asks for more instances wins); alarms cover server errors, model
latency, and the multi-model specifics: time spent waiting for models to load, and cache misses.

Updates keep serving: any change but the instance type is an UpdateEndpoint to a new EndpointConfig that keeps
the variant's current (autoscaled) instance count (`RetainAllVariantProperties`; data capture is taken from the
new config). SageMaker refuses to change the instance type of a variant registered with Application Auto
Scaling, so the instance type is part of the endpoint's logical id: a change creates a new endpoint (and its
scalable target), points the inference API at it, then deletes the old one.

The variant runs on an explicit SageMaker host image (`InferenceAmiVersion`, infra/gpu_hosts.py): the
default GPU host of ml.g4dn/ml.g5 has driver 470 (CUDA 11.4), too old for every supported Triton release.
"""

from __future__ import annotations

import re

from aws_cdk import Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.config import Serving
from infra.instance_types import gpu_count, has_instance_store
from infra.triton_images import REGISTRIES, REPOSITORY, image_uri
from modelgate.serving.settings import ENDPOINT_NAME_MAX

VARIANT = "AllTraffic"
DATA_CAPTURE_PREFIX = "data-capture/"  # + the group: each endpoint writes (and may write) only its own captures
# Alarm thresholds. Latencies are in microseconds, as SageMaker publishes them.
ERRORS_5XX_PER_5_MINUTES = 5
MODEL_LATENCY_P90_US = 2_000_000  # a forecast takes milliseconds; seconds mean the GPU is saturated
MODEL_LOADING_WAIT_P90_US = 10_000_000  # requests waiting 10 s for a model to load: the cache is thrashing
MIN_CACHE_HIT_RATE = 0.5  # most requests must find their model loaded
GPU_MEMORY_PERCENT = 90  # of each GPU: MME unloads models under memory pressure, which shows up as misses


def endpoint_id(instance_type: str) -> str:
    """Construct id of the endpoint: a new instance type is a new endpoint (see the module docstring)."""
    return "Endpoint" + "".join(part.capitalize() for part in instance_type.removeprefix("ml.").split("."))


def endpoint_name(stack_name: str, group: str, unique: str) -> str:
    """`<stack name>-<group>-<8 hex of the construct path>`, shortened to SageMaker's 63 characters: readable in
    the console, unique in the account (the stack name holds the project and the environment). The group is left
    out where the stack name already ends with it (`Serving-<model>` of a model named like its group)."""
    readable = stack_name if stack_name.endswith(f"-{group}") else f"{stack_name}-{group}"
    readable = re.sub(r"[^A-Za-z0-9-]+", "-", readable)[: ENDPOINT_NAME_MAX - 9].strip("-")
    return f"{readable}-{unique[:8]}"


class TritonMultiModelEndpoint(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        serving: Serving,
        model_repository: s3.IBucket,
        prefix: str,
        capture_prefix: str,
        label: str,  # what alarms call it (the model group): one topic carries every endpoint's alarms
        key: kms.IKey,
        capture_bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.image = image_uri(stack.region, serving.triton_version)

        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"Triton multi-model endpoint ({prefix}): reads its approved archives, pulls the Triton image",
        )
        model_repository.grant_read(self.role, f"{prefix}*")
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[f"arn:aws:ecr:{stack.region}:{REGISTRIES[stack.region]}:repository/{REPOSITORY}"],
            )
        )
        self.role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[f"arn:aws:logs:{stack.region}:{stack.account}:log-group:/aws/sagemaker/Endpoints/*"],
            )
        )

        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=self.image,
                mode="MultiModel",
                model_data_url=f"s3://{model_repository.bucket_name}/{prefix}",
            ),
            # SageMaker fetches the archives; the models (Python backend with numpy, ONNX) need no network.
            enable_network_isolation=True,
        )
        self.model.node.add_dependency(self.role)  # the policy must exist before SageMaker checks access

        capture = None
        if serving.data_capture:
            capture_bucket.grant_put(self.role, f"{capture_prefix}*")
            capture = sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
                enable_capture=True,
                initial_sampling_percentage=100,
                destination_s3_uri=f"s3://{capture_bucket.bucket_name}/{capture_prefix}",
                kms_key_id=key.key_arn,
                capture_options=[
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
                ],
                capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                    json_content_types=["application/json"]
                ),
            )
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=self.model.attr_model_name,
                    initial_instance_count=serving.min_instances,
                    instance_type=serving.instance_type,
                    initial_variant_weight=1.0,
                    inference_ami_version=serving.host_ami,
                )
            ],
            # Instance types with NVMe instance storage refuse a KmsKeyId (that storage is hardware-encrypted).
            kms_key_id=None if has_instance_store(serving.instance_type) else key.key_arn,
            data_capture_config=capture,
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            endpoint_id(serving.instance_type),
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            retain_all_variant_properties=True,  # an update keeps the autoscaled instance count
            exclude_retained_variant_properties=[
                sagemaker.CfnEndpoint.VariantPropertyProperty(variant_property_type="DataCaptureConfig")
            ],
        )
        # Named at synth: the inference API's invoke function gets every endpoint's name in a file of its code
        # package, which CloudFormation cannot fill in. A new instance type is a new construct path, hence a new
        # name (see above): the old endpoint serves until the new one is in service.
        path_hash = self.endpoint.node.addr[2:]  # addr: "c8" + a hash of the path
        self.endpoint.endpoint_name = endpoint_name(stack.stack_name, label, path_hash)
        self.endpoint_name: str = self.endpoint.endpoint_name
        self.endpoint_arn = self.endpoint.ref  # Ref of AWS::SageMaker::Endpoint is its ARN

        self._autoscaling(serving)
        self.alarms = self._alarms(serving, label)

    def _metric(self, name: str, statistic: str, namespace: str = "AWS/SageMaker") -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=name,
            dimensions_map={"EndpointName": self.endpoint_name, "VariantName": VARIANT},
            statistic=statistic,
            period=Duration.minutes(5),
        )

    def _autoscaling(self, serving: Serving) -> None:
        self.scaling = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=serving.min_instances,
            max_capacity=serving.max_instances,
        )
        self.scaling.node.add_dependency(self.endpoint)
        self.scaling.scale_to_track_metric(
            "Invocations",
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            target_value=serving.target_invocations_per_instance,
            scale_out_cooldown=Duration.minutes(1),
            scale_in_cooldown=Duration.minutes(5),
        )
        # CloudWatch sums GPUUtilization over the instance's GPUs (0-100% x GPUs): the target scales with them.
        gpu_metric = self._metric("GPUUtilization", "Average", namespace="/aws/sagemaker/Endpoints")
        self.scaling.scale_to_track_metric(
            "GpuUtilization",
            custom_metric=gpu_metric,
            target_value=serving.target_gpu_utilization * gpu_count(serving.instance_type),
            scale_out_cooldown=Duration.minutes(1),
            scale_in_cooldown=Duration.minutes(5),
        )

    def _alarms(self, serving: Serving, label: str) -> list[cloudwatch.Alarm]:
        gpus = gpu_count(serving.instance_type)

        def alarm(construct_id: str, metric: cloudwatch.IMetric, threshold: float, description: str, **kwargs):
            return cloudwatch.Alarm(
                self,
                construct_id,
                metric=metric,
                threshold=threshold,
                alarm_description=f"Triton endpoint of {label}: {description}",
                evaluation_periods=kwargs.pop("evaluation_periods", 3),
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                **kwargs,
            )

        above = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        return [
            alarm(
                "Errors5xx",
                self._metric("Invocation5XXErrors", "Sum"),
                ERRORS_5XX_PER_5_MINUTES,
                "server errors (5xx) from the model container",
                comparison_operator=above,
                evaluation_periods=1,
            ),
            alarm(
                "ModelLatency",
                self._metric("ModelLatency", "p90"),
                MODEL_LATENCY_P90_US,
                "p90 model latency above 2 s for 15 minutes",
                comparison_operator=above,
            ),
            alarm(
                "ModelLoadingWait",
                self._metric("ModelLoadingWaitTime", "p90"),
                MODEL_LOADING_WAIT_P90_US,
                "requests wait over 10 s (p90) for their model to load",
                comparison_operator=above,
            ),
            alarm(
                "CacheMisses",
                self._metric("ModelCacheHit", "Average"),
                MIN_CACHE_HIT_RATE,
                "under half of the requests find their model loaded (cache misses)",
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            ),
            alarm(
                "GpuMemory",
                self._metric("GPUMemoryUtilization", "Average", namespace="/aws/sagemaker/Endpoints"),
                GPU_MEMORY_PERCENT * gpus,
                "GPU memory above 90%: models are evicted and reloaded",
                comparison_operator=above,
            ),
        ]
