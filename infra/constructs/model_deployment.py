"""The serving deploy step of one model group in one environment: a Lambda that makes the group's endpoint
prefix hold exactly the group's approved version.

One per (model group, environment), not one for all groups: each function's role may read only its group's
approved-model parameter and write only its group's prefix and deployment record, so an approval of one group
cannot touch another group's endpoint even through a bug; each group has its own lease, so a long deploy of one
never delays another; and its environment stays a few fixed variables however many models there are.

It runs when the group's approved-model parameter changes (EventBridge "Parameter Store Change"), once a day to
repair drift, and on demand (`aws lambda invoke --payload '{"action": "deploy"}'`). One run at a time: each
holds a lease in the construct's DynamoDB table (modelgate/serving/deploy_lock.py), not reserved concurrency,
which a fresh account's Lambda quota cannot spare. Failures are retried, then kept in the failure queue, which
alarms.

Where the approved version's archives live: the artifacts bucket of the environment whose pipeline trained it
(the approval records its S3 URL in Parameter Store); see infra/constructs/model_artifacts.py for both sides of
the grant.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.failure_alarm import FailureQueue
from infra.constructs.model_artifacts import grant_read_registered_models
from infra.constructs.modelgate_function import ModelGateFunction
from modelgate.serving import deploy_lock
from modelgate.serving import settings as names
from modelgate.serving.deployment import deployment_key, model_prefix

DEPLOY_TIMEOUT_SECONDS = 900
DEPLOY_TMP_MIB = 10240  # archives above 64 MiB are verified through /tmp


class ApprovedModelDeployment(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_package_group: str,
        parameter_name: str,
        model_repository: s3.IBucket,
        layer: lambda_.ILayerVersion,
        failures: FailureQueue,
        artifacts: s3.IBucket,
        other_accounts: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # Stateless: a lease lives for one run at most, so the table may be rebuilt with the stack.
        self.locks = dynamodb.Table(
            self,
            "Locks",
            partition_key=dynamodb.Attribute(name=deploy_lock.PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=deploy_lock.TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.function = ModelGateFunction(
            self,
            "Deploy",
            handler="lambdas.serving_deploy.handler",
            description=f"ModelGate serving deploy ({model_package_group}, {environment}): approved version -> "
            "its multi-model endpoint's prefix",
            environment={
                names.BUCKET: model_repository.bucket_name,
                names.PARAMETER: parameter_name,
                names.GROUP: model_package_group,
                names.ENVIRONMENT: environment,
                names.DEPLOY_LOCK_TABLE: self.locks.table_name,
                names.DEPLOY_LEASE_SECONDS: str(DEPLOY_TIMEOUT_SECONDS),
            },
            layer=layer,
            timeout_seconds=DEPLOY_TIMEOUT_SECONDS,
            memory_size=1024,
            on_failure=failures.queue,
            retry_attempts=2,
        )
        self.locks.grant(self.function.role, "dynamodb:PutItem", "dynamodb:DeleteItem")
        function = self.function.function.node.default_child
        function.ephemeral_storage = lambda_.CfnFunction.EphemeralStorageProperty(size=DEPLOY_TMP_MIB)

        self.function.role.add_to_policy(
            iam.PolicyStatement(
                actions=["ssm:GetParameter"],
                resources=[f"arn:{stack.partition}:ssm:{stack.region}:{stack.account}:parameter{parameter_name}"],
            )
        )
        # Its own group's prefix and record only: another group's endpoint is out of this role's reach.
        prefix = model_prefix(model_package_group)
        model_repository.grant_read_write(self.function.role, f"{prefix}*")
        model_repository.grant_read_write(self.function.role, deployment_key(model_package_group))
        model_repository.grant_delete(self.function.role, f"{prefix}*")
        # The approved version's archives: in whichever environment trained it (infra/constructs/model_artifacts.py).
        grant_read_registered_models(self.function.role, artifacts=artifacts, other_accounts=other_accounts)

        target = targets.LambdaFunction(
            self.function.function,
            dead_letter_queue=failures.queue,  # delivery failures (throttling, permissions)
            retry_attempts=8,
            max_event_age=Duration.hours(6),
        )
        self.on_approval = events.Rule(
            self,
            "OnApproval",
            description=f"ModelGate: the approved {model_package_group} of {environment} changed -> deploy it",
            event_pattern=events.EventPattern(
                source=["aws.ssm"],
                detail_type=["Parameter Store Change"],
                detail={"name": [parameter_name]},
            ),
            targets=[target],
        )
        self.reconcile = events.Rule(
            self,
            "Reconcile",
            description=f"ModelGate: daily check that {model_package_group}'s endpoint in {environment} serves "
            "exactly its approved version",
            schedule=events.Schedule.rate(Duration.days(1)),
            targets=[target],
        )
