"""Serving of one environment: the Triton multi-model GPU endpoint, the deploy step that fills it with exactly
the approved model version, and the JWT-authorized inference API in front of it. Stateless: every byte it
serves lives in the Storage stack (model-repository bucket, KMS key) and comes back on redeploy.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from constructs import Construct

from infra.build.lambda_bundle import dependencies_layer
from infra.build.nag import KMS_GRANT_ACTIONS, S3_GRANT_ACTIONS, regex, suppress
from infra.config import Environment, ModelProject, Project
from infra.constructs.failure_alarm import FailureQueue
from infra.constructs.inference_api import InferenceApi
from infra.constructs.model_artifacts import CROSS_ACCOUNT_READ_FINDINGS, ArtifactsSharing
from infra.constructs.model_deployment import ApprovedModelDeployment
from infra.constructs.triton_endpoint import TritonMultiModelEndpoint
from modelgate.parameters import parameter_name
from stacks.storage_stack import StorageStack
from stacks.topology import Topology


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
        # MERGE BRIDGE (r-infra): the Stage's call of issue 13; r-serve's ServingStack serves every model. Until
        # that merges, this serves the first model only.
        group = models[0].model_package_group
        topology = topology or Topology.standalone(environment)
        layer = dependencies_layer(self)

        # One queue + topic for everything of serving that needs a person: failed deploys and every alarm.
        self.failures = FailureQueue(
            self, "Failures", key=storage.key, notify=environment.approvers.emails, what=f"ModelGate serving ({env})"
        )
        self.endpoint = TritonMultiModelEndpoint(
            self,
            "Triton",
            serving=environment.serving,
            model_repository=storage.model_repository,
            key=storage.key,
            capture_bucket=storage.artifacts,
        )
        self.deployment = ApprovedModelDeployment(
            self,
            "Deployment",
            environment=env,
            model_package_group=group,
            parameter_name=parameter_name(project.name, group, env),
            model_repository=storage.model_repository,
            layer=layer,
            failures=self.failures,
            artifacts=storage.artifacts,
            other_accounts=topology.other_accounts,
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
            endpoint=self.endpoint,
            model_repository=storage.model_repository,
            layer=layer,
        )
        self.failures.notify_on(*self.endpoint.alarms, *self.api.alarms)
        self._suppressions(bool(topology.other_accounts), environment.serving.data_capture)

    def _suppressions(self, reads_other_accounts: bool, data_capture: bool) -> None:
        bucket_objects = regex(r"Resource::<ModelRepository[0-9A-F]{8}\.Arn>\/\*")
        capture = [regex(r"Resource::<Artifacts[0-9A-F]{8}\.Arn>\/data-capture\/\*"), *KMS_GRANT_ACTIONS]
        suppress(
            self,
            "Triton/ExecutionRole/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "SageMaker's documented execution-role needs: reading the archives under the "
                "endpoint's prefix (models/*) of this environment's bucket with its key, ECR auth (account-wide by "
                "design), metrics only in SageMaker's namespaces, logs only in its endpoint log groups; with data "
                "capture on, writing captures under data-capture/ of the artifacts bucket with the key.",
            },
            {
                "AwsSolutions-IAM5": [
                    *S3_GRANT_ACTIONS,
                    regex(r"Resource::<ModelRepository[0-9A-F]{8}\.Arn>\/models\/\*"),
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
                "AwsSolutions-IAM5": "The deploy step copies any approved archive into this environment's bucket and "
                "deletes what is no longer approved (object names come from the manifest at run time); it reads "
                "archives from this environment's artifacts bucket and the registered versions (models/ objects) "
                "in buckets of the project's other accounts (s3:ResourceAccount), decrypted only through S3.",
            },
            {"AwsSolutions-IAM5": [*S3_GRANT_ACTIONS, *KMS_GRANT_ACTIONS, bucket_objects, *artifacts]},
        )
        suppress(
            self,
            "InferenceApi/Invoke/Role/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "Reads the one deployment record object of this environment's bucket (CDK's "
                "read grant emits the s3:GetObject*/List* action groups) with its key.",
            },
            {"AwsSolutions-IAM5": [*S3_GRANT_ACTIONS]},
        )
        cognito = (
            "Callers are SaaS applications (e.g. Salesforce Einstein Studio) holding JWTs from their own OIDC issuer "
            "(issuer, audience, JWKS from config), not Cognito users: a Lambda TOKEN authorizer verifies them."
        )
        for path in ("InferenceApi/Api/Default/models/{model}/invoke/POST", "InferenceApi/Api/Default/health/GET"):
            suppress(self, f"{path}/Resource", {"AwsSolutions-COG4": cognito})
