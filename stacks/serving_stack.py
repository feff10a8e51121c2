"""Serving of one environment, split so that no stack grows with the number of models:

- `ModelServingStack` (`Serving-<model>`, one per model): the model group's Triton multi-model GPU endpoint with
  that model's serving settings, its deploy step that fills it with exactly the group's approved version
  (`ModelServing`), and its own failure queue and alarm topic (e-mailing the model's approvers). About 30
  resources whatever the number of models; it references only the Storage stack.
- `ServingStack` (`Serving`, one per environment): the JWT-authorized inference API in front of every model's
  endpoint, routing by group, and the sharing of this environment's registered versions with the other accounts.
  It names the endpoints (their names are fixed at synth) instead of referencing them, and deploys after the
  model stacks (a stack dependency, no reference): a model's endpoint exists before the API routes to it, and
  adding or removing a model never changes an output another stack reads. On an upgrade from the one Serving
  stack of earlier releases, the model stacks create new endpoints (new names) before the Serving update deletes
  the old ones.

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
from infra.constructs.failure_alarm import AlarmTopic, FailureQueue
from infra.constructs.inference_api import InferenceApi
from infra.constructs.model_artifacts import CROSS_ACCOUNT_READ_FINDINGS, ArtifactsSharing
from infra.constructs.model_deployment import ApprovedModelDeployment
from infra.constructs.triton_endpoint import DATA_CAPTURE_PREFIX, TritonMultiModelEndpoint
from modelgate.parameters import parameter_name
from modelgate.serving import settings as names
from modelgate.serving.deployment import model_prefix
from stacks.storage_stack import StorageStack
from stacks.topology import Topology


def model_construct_id(model: str) -> str:
    """`ModelServing` id of a model in its stack: `energy-forecast` -> `ModelEnergyForecast`."""
    return "Model" + "".join(part.capitalize() for part in model.split("-"))


def model_serving_stack_id(model: ModelProject) -> str:
    return f"Serving-{model.name}"


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


class ModelServingStack(Stack):
    """One model's serving in one environment (`Serving-<model>`): its `ModelServing` and its own failure queue."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        environment: Environment,
        model: ModelProject,
        storage: StorageStack,
        topology: Topology | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        env = environment.name
        topology = topology or Topology.standalone(environment)
        # Failed deploys and the endpoint's alarms go to the people who approve this model here.
        self.failures = FailureQueue(
            self,
            "Failures",
            key=storage.key,
            notify=model.environments[env].approvers.emails,
            what=f"ModelGate serving of {model.model_package_group} ({env})",
        )
        self.serving = ModelServing(
            self,
            model_construct_id(model.name),
            project=project,
            model=model,
            environment=env,
            storage=storage,
            layer=dependencies_layer(self),
            failures=self.failures,
            other_accounts=topology.other_accounts,
        )
        self.failures.notify_on(*self.serving.endpoint.alarms)
        self.served = names.ServedModel(model.name, model.model_package_group, self.serving.endpoint.endpoint_name)


class ServingStack(Stack):
    """The environment's inference API over every model's endpoint (`served`, from the `ModelServingStack`s)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: Environment,
        served: Sequence[names.ServedModel],
        storage: StorageStack,
        topology: Topology | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        env = environment.name
        topology = topology or Topology.standalone(environment)
        if not served:
            raise ValueError(f"{construct_id} ({env}): no models to serve; pass config.models (at least one)")
        # The inference API's alarms (same construct path as before the split: the topic and its confirmed
        # subscriptions stay).
        self.alarms = AlarmTopic(
            self, "Failures", key=storage.key, notify=environment.approvers.emails, what=f"ModelGate serving ({env})"
        )
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
            served=served,
            model_repository=storage.model_repository,
            layer=dependencies_layer(self),
        )
        self.alarms.notify_on(*self.api.alarms)
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
