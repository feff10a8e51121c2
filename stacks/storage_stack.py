"""Stateful resources of one environment: the KMS key, the buckets, the approval state and (once per account
and region) API Gateway's logging role. Retained on delete.

Everything that holds data or account-wide settings lives here so that the stateless stacks (pipeline,
approval, serving) can be destroyed and recreated freely; they receive these objects, never names.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from modelgate.approval import history, state
from stacks.api_gateway_logging import ApiGatewayAccountLogging
from stacks.nag import suppress
from stacks.secure_bucket import AccessLogsBucket, SecureBucket
from stacks.topology import registry_sharing_policy


class StorageStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model_package_group: str | None = None,
        registry_sharing: Sequence[str] = (),
        api_gateway_account: bool = True,
        **kwargs,
    ) -> None:
        """`model_package_group`: create the Model Registry group here (only in the registry environment).
        `api_gateway_account`: own API Gateway's account-level logging role (one environment per account and
        region, stacks/topology.py); the stacks with REST APIs must deploy after it."""
        super().__init__(scope, construct_id, **kwargs)
        self.api_gateway_logging = ApiGatewayAccountLogging(self, "ApiGatewayLogging") if api_gateway_account else None

        self.key = kms.Key(
            self,
            "DataKey",
            description=f"ModelGate data key ({self.stack_name})",
            enable_key_rotation=True,
            rotation_period=Duration.days(365),
            removal_policy=RemovalPolicy.RETAIN,
            pending_window=Duration.days(30),
        )
        self.access_logs = AccessLogsBucket(self, "AccessLogs")

        def bucket(name: str, noncurrent_days: int = 90) -> SecureBucket:
            return SecureBucket(self, name, key=self.key, access_logs=self.access_logs, noncurrent_days=noncurrent_days)

        # Raw device readings (JSON lines) as they arrive.
        self.raw_data = bucket("RawData", noncurrent_days=30)
        # Cleaned, typed, de-duplicated Parquet per customer, and the quarantine of malformed records.
        self.curated_data = bucket("CuratedData", noncurrent_days=30)
        # Pipeline step outputs: checkpoints, model artifacts, evaluation reports, packaged model repositories.
        self.artifacts = bucket("Artifacts")
        # What the multi-model endpoint serves: only archives of approved model versions are copied here.
        self.model_repository = bucket("ModelRepository")

        if model_package_group is not None:
            self._model_registry(model_package_group, registry_sharing)
        self._approval_state()

    def _model_registry(self, name: str, sharing_accounts: Sequence[str]) -> None:
        """The one Model Registry group (held by the registry environment, see stacks/topology.py): its versions
        and their approval metadata are the subject of the approval history, so it is retained like the data."""
        group_arn = f"arn:aws:sagemaker:{self.region}:{self.account}:model-package-group/{name}"
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=name,
            model_package_group_description="ModelGate: one version per training pipeline run that passed its gate",
            model_package_group_policy=(
                registry_sharing_policy(group_arn, sharing_accounts) if sharing_accounts else None
            ),
        )
        self.model_package_group.apply_removal_policy(RemovalPolicy.RETAIN)

    def _approval_state(self) -> None:
        """What the approval workflow must never lose: its link-signing key, its state, its decision history."""
        # HMAC key for approval links, CSRF tokens and sign-in state (kms:GenerateMac / kms:VerifyMac): the
        # secret never leaves KMS. HMAC keys cannot rotate automatically (nag KMS5 is suppressed in the stage).
        self.approval_signing_key = kms.Key(
            self,
            "ApprovalSigningKey",
            description=f"ModelGate approval link signing (HMAC) ({self.stack_name})",
            key_spec=kms.KeySpec.HMAC_256,
            key_usage=kms.KeyUsage.GENERATE_VERIFY_MAC,
            removal_policy=RemovalPolicy.RETAIN,
            pending_window=Duration.days(30),
        )
        suppress(
            self,
            "ApprovalSigningKey/Resource",
            {
                "AwsSolutions-KMS5": "An HMAC key: AWS KMS does not rotate HMAC keys automatically. Links expire "
                "within approvers.link_ttl_hours, so replacing the key by hand costs only outstanding links."
            },
        )

        def table(construct_id: str, **kwargs) -> dynamodb.Table:
            return dynamodb.Table(
                self,
                construct_id,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=self.key,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                deletion_protection=True,
                removal_policy=RemovalPolicy.RETAIN,
                **kwargs,
            )

        # Used links, committed decisions per (version, environment), sent e-mails (modelgate.approval.state).
        self.approval_state = table(
            "ApprovalState",
            partition_key=dynamodb.Attribute(name=state.PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            time_to_live_attribute=state.TTL_ATTRIBUTE,
        )
        # Every decision, append-only (modelgate.approval.history).
        self.approval_history = table(
            "ApprovalHistory",
            partition_key=dynamodb.Attribute(name=history.PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=history.SORT_KEY, type=dynamodb.AttributeType.STRING),
        )
        self.approval_history.add_global_secondary_index(
            index_name=history.VERSION_INDEX,
            partition_key=dynamodb.Attribute(name=history.VERSION_INDEX_KEY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=history.SORT_KEY, type=dynamodb.AttributeType.STRING),
        )
