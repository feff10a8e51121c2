"""An S3 bucket with ModelGate's non-negotiables: KMS, versioning, TLS-only, no public access, access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

# What the data buckets and the access-log bucket share: versioned, TLS 1.2+ only, private, owner-owned objects
# (no ACLs), retained when the stack goes.
EVERY_BUCKET = {
    "versioned": True,
    "enforce_ssl": True,
    "minimum_tls_version": 1.2,
    "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
    "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    "removal_policy": RemovalPolicy.RETAIN,
}


class SecureBucket(s3.Bucket):
    """A retained, KMS-encrypted, versioned bucket that only accepts TLS 1.2+ and logs every access.

    Old object versions expire after `noncurrent_days` so versioning protects against mistakes without
    growing storage forever.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        access_logs: s3.IBucket,
        noncurrent_days: int = 90,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,  # one KMS data key per bucket, not per object: far fewer KMS calls
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix=f"{construct_id}/",
            **EVERY_BUCKET,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=Duration.days(noncurrent_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )


class AccessLogsBucket(s3.Bucket):
    """The target of S3 server access logs. SSE-S3 because log delivery cannot write SSE-KMS objects."""

    def __init__(self, scope: Construct, construct_id: str, *, retention_days: int = 365) -> None:
        super().__init__(
            scope,
            construct_id,
            encryption=s3.BucketEncryption.S3_MANAGED,
            **EVERY_BUCKET,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=Duration.days(retention_days),
                    noncurrent_version_expiration=Duration.days(30),
                )
            ],
        )
