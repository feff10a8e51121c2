"""Serving of one environment, for every model of the platform: per model group a Triton multi-model GPU
endpoint with that model's serving settings and a deploy step that fills it with exactly the group's approved
version (`ModelServing`), and one JWT-authorized inference API in front of all of them, routing by group.
Stateless: every byte it serves lives in the Storage stack (model-repository bucket, KMS key) and comes back on
redeploy.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.build.lambda_bundle import dependencies_layer
from infra.build.nag import KMS_GRANT_ACTIONS, S3_GRANT_ACTIONS, regex, suppress
from infra.config import Environment, ModelProject, Project
from infra.constructs.failure_alarm import FailureQueue
from infra.constructs.inference_api import InferenceApi
from infra.constructs.model_artifacts import CROSS_ACCOUNT_READ_FINDINGS, ArtifactsSharing
from infra.constructs.model_deployment import ApprovedModelDeployment
from infra.constructs.triton_endpoint import DATA_CAPTURE_PREFIX, TritonMultiModelEndpoint
from modelgate.parameters import parameter_name
from modelgate.serving.deployment import model_prefix
from stacks.storage_stack import StorageStack
from stacks.topology import Topology


def model_construct_id(model: str) -> str:
    """`ModelServing` id of a model: `energy-forecast` -> `ModelEnergyForecast` (config names are unique)."""
    return "Model" + "".join(part.capitalize() for part in model.split("-"))


class ModelServing(Construct):
    """One model group in one environment: its endpoint (the model's own serving settings) and its deploy step
    (its own lease, its own approved-model parameter, its own prefix of the environment's bucket)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        model: ModelProject,
        environment: str,
        storage: StorageStack,
        layer: lambda_.ILayerVersion,
        failures: FailureQueue,
        other_accounts: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.model, self.group = model.name, model.model_package_group
        serving = model.environments[environment].serving
        self.parameter_name = parameter_name(project.name, self.group, environment)
        self.endpoint = TritonMultiModelEndpoint(
            self,
            "Triton",
            serving=serving,
            model_repository=storage.model_repository,
            prefix=model_prefix(self.group),
            capture_prefix=f"{DATA_CAPTURE_PREFIX}{self.group}/",
            label=self.group,
            key=storage.key,
            capture_bucket=storage.artifacts,
        )
        self.deployment = ApprovedModelDeployment(
            self,
            "Deployment",
            environment=environment,
            model_package_group=self.group,
            parameter_name=self.parameter_name,
            model_repository=storage.model_repository,
            layer=layer,
            failures=failures,
            artifacts=storage.artifacts,
            other_accounts=other_accounts,
        )
        self._suppressions(bool(other_accounts), serving.data_capture)

    def _suppressions(self, reads_other_accounts: bool, data_capture: bool) -> None:
        def objects(bucket: str, prefix: str):  # cdk-nag's IAM5 finding of `<bucket>.Arn/<prefix>*`
            return regex(rf"Resource::<{bucket}[0-9A-F]{{8}}\.Arn>\/" + prefix.replace("/", r"\/") + r"\*")

        own_objects = objects("ModelRepository", model_prefix(self.group))
        capture = [objects("Artifacts", f"{DATA_CAPTURE_PREFIX}{self.group}/"), *KMS_GRANT_ACTIONS]
        suppress(
            self,
            "Triton/ExecutionRole/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "SageMaker's documented execution-role needs: reading the archives under this "
                "group's endpoint prefix (models/<group>/*) of this environment's bucket with its key, ECR auth "
                "(account-wide by design), metrics only in SageMaker's namespaces, logs only in its endpoint log "
                "groups; with data capture on, writing captures under data-capture/<group>/ of the artifacts bucket.",
            },
            {
                "AwsSolutions-IAM5": [
                    *S3_GRANT_ACTIONS,
                    own_objects,
                    "Resource::*",
                    regex(r"Resource::arn:aws:logs:[a-z0-9-]+:\d{12}:log-group:\/aws\/sagemaker\/Endpoints\/\*"),
                    *(capture if data_capture else []),
                ]
            },
        )
        artifacts = [
            regex(r"Resource::<Artifacts[0-9A-F]{8}\.Arn>\/\*"),
            *(CROSS_ACCOUNT_READ_FINDINGS if reads_other_accounts else []),
        ]
        suppress(
            self,
            "Deployment/Deploy/Role/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "The deploy step copies any approved archive of its group into the group's "
                "prefix (models/<group>/*) and deletes what is no longer approved there (object names come from the "
                "manifest at run time); it reads archives from this environment's artifacts bucket and the "
                "registered versions (models/ objects) in buckets of the project's other accounts "
                "(s3:ResourceAccount), decrypted only through S3.",
            },
            {"AwsSolutions-IAM5": [*S3_GRANT_ACTIONS, *KMS_GRANT_ACTIONS, own_objects, *artifacts]},
        )


class ServingStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        environment: Environment,
        models: Sequence[ModelProject],
        storage: StorageStack,
        topology: Topology | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        env = environment.name
        topology = topology or Topology.standalone(environment)
        layer = dependencies_layer(self)

        # One queue + topic for everything of serving that needs a person: failed deploys and every alarm.
        self.failures = FailureQueue(
            self, "Failures", key=storage.key, notify=environment.approvers.emails, what=f"ModelGate serving ({env})"
        )
        if not models:
            raise ValueError(f"{construct_id} ({env}): no models to serve; pass config.models (at least one)")
        ids = [model_construct_id(model.name) for model in models]
        if len(set(ids)) != len(ids):
            clash = [model.name for model, i in zip(models, ids, strict=True) if ids.count(i) > 1]
            raise ValueError(f"models {', '.join(clash)} map to the same construct id: rename one (e.g. no '--')")
        self.models = {
            model.model_package_group: ModelServing(
                self,
                model_construct_id(model.name),
                project=project,
                model=model,
                environment=env,
                storage=storage,
                layer=layer,
                failures=self.failures,
                other_accounts=topology.other_accounts,
            )
            for model in models
        }
        # Versions trained here may be approved and served in the other environments
        # (infra/constructs/model_artifacts.py).
        ArtifactsSharing(
            self,
            "ArtifactsSharing",
            artifacts=storage.artifacts,
            key=storage.key,
            accounts=[account for account in topology.other_accounts if account != self.account],
        )
        self.api = InferenceApi(
            self,
            "InferenceApi",
            api=environment.api,
            environment=env,
            endpoints=[(m.model, m.group, m.endpoint) for m in self.models.values()],
            model_repository=storage.model_repository,
            layer=layer,
        )
        self.failures.notify_on(*(a for m in self.models.values() for a in m.endpoint.alarms), *self.api.alarms)
        self._suppressions()

    def _suppressions(self) -> None:
        suppress(
            self,
            "InferenceApi/Invoke/Role/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "Reads the deployment records (deployments/*: one object per model group) of "
                "this environment's bucket (CDK's read grant emits the s3:GetObject*/List* action groups) with its "
                "key.",
            },
            {
                "AwsSolutions-IAM5": [
                    *S3_GRANT_ACTIONS,
                    regex(r"Resource::<ModelRepository[0-9A-F]{8}\.Arn>\/deployments\/\*"),
                ]
            },
        )
        cognito = (
            "Callers are SaaS applications (e.g. Salesforce Einstein Studio) holding JWTs from their own OIDC issuer "
            "(issuer, audience, JWKS from config), not Cognito users: a Lambda TOKEN authorizer verifies them."
        )
        for method in (
            "groups/{group}/models/{customer}/invoke/POST",
            "groups/{group}/health/GET",
            "health/GET",
        ):
            suppress(self, f"InferenceApi/Api/Default/{method}/Resource", {"AwsSolutions-COG4": cognito})
