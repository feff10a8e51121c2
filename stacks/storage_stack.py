"""Stateful resources of one environment: the KMS key, the buckets, the approval store
(infra/constructs/approval_store.py), in the first environment of the chain the Model Registry groups (one per
model), and (once per account and region) API Gateway's logging role. Retained on delete.

Everything that holds data or account-wide settings lives here so that the stateless stacks (pipeline,
approval, serving) can be destroyed and recreated freely; they receive these objects, never names.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.constructs.api_gateway_logging import ApiGatewayAccountLogging
from infra.constructs.approval_store import ApprovalStore
from infra.constructs.secure_bucket import AccessLogsBucket, SecureBucket
from stacks.topology import registry_sharing_policy


class StorageStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model_package_groups: Sequence[str] = (),
        registry_sharing: Sequence[str] = (),
        api_gateway_account: bool = True,
        **kwargs,
    ) -> None:
        """`model_package_groups`: create these Model Registry groups here, one per model (only in the first
        environment of the chain, stacks/topology.py), each shared with `registry_sharing` accounts.
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

        self.model_package_groups: dict[str, sagemaker.CfnModelPackageGroup] = {}
        for group in model_package_groups:
            self._model_registry(group, registry_sharing)
        self._approval_state()

    def _model_registry(self, name: str, sharing_accounts: Sequence[str]) -> None:
        """One model's Model Registry group (held by the first environment of the chain, stacks/topology.py): its
        versions and their approval metadata are the subject of the approval history, so it is retained like the
        data. The construct id is the group's name, so adding or removing a model leaves the others' ids alone."""
        group_arn = f"arn:aws:sagemaker:{self.region}:{self.account}:model-package-group/{name}"
        self.model_package_groups[name] = group = sagemaker.CfnModelPackageGroup(
            self,
            f"ModelPackageGroup-{name}",
            model_package_group_name=name,
            model_package_group_description="ModelGate: one version per training pipeline run that passed its gate",
            model_package_group_policy=(
                registry_sharing_policy(group_arn, sharing_accounts) if sharing_accounts else None
            ),
        )
        group.apply_removal_policy(RemovalPolicy.RETAIN)

    def _approval_state(self) -> None:
        self.approval = ApprovalStore(self, "ApprovalStore", key=self.key)
