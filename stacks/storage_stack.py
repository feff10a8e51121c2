"""Stateful resources of one environment: the KMS key and the buckets. Retained on delete.

Everything that holds data lives here so that the stateless stacks (pipeline, approval, serving) can be
destroyed and recreated freely; they receive these objects, never names.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.secure_bucket import AccessLogsBucket, SecureBucket


class StorageStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, model_package_group: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)

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

        # The Model Registry group every model version of this environment is registered in: its versions and
        # their approval metadata are the approval history, so it is retained like the data.
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=model_package_group,
            model_package_group_description="ModelGate: one version per training pipeline run that passed its gate",
        )
        self.model_package_group.apply_removal_policy(RemovalPolicy.RETAIN)
