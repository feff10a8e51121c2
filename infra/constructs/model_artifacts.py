"""Registered model versions are readable wherever they may be approved and served.

Design (issue 12, problem 8): every environment may train, and each pipeline registers its versions into the
one Model Registry (dev's group) with the archives, manifest and evaluation report in *its own* artifacts
bucket, encrypted with *its own* data key. Nothing is copied at registration; instead every environment's
artifacts bucket and key let the other environments' accounts read the registered versions (objects under a
`models/` prefix only, decrypted only through S3), and every role that reads a version (deploy step,
request-approval, approval API) may read those objects in the project's other accounts. So a version trained in
test, uat or prod is e-mailed with its metrics and served in each environment that approves it, exactly like one
trained in dev. Both sides are needed across accounts: the bucket and key policies (owner) and the role's own
policy (reader).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.build.nag import regex

# Object keys of registered versions: `<execution id>/models/...` (SageMaker pipeline) and `models/...` (the local
# runner). Archives, manifest.json and evaluation.json all live there.
REGISTERED_MODEL_KEYS = ("*/models/*", "models/*")

# cdk-nag IAM5 findings of `grant_read_registered_models` (cross-account part), for the callers' suppressions.
CROSS_ACCOUNT_READ_FINDINGS = [
    *(f"Resource::arn:aws:s3:::*/{keys}" for keys in REGISTERED_MODEL_KEYS),
    regex(r"Resource::arn:aws:kms:\*:\d{12}:key\/\*"),
]


def grant_read_registered_models(role: iam.IRole, *, artifacts: s3.IBucket, other_accounts: Sequence[str]) -> None:
    """Let `role` read registered versions: all of this environment's artifacts bucket, and the `models/`
    objects of buckets in `other_accounts` (their policies must allow it: `ArtifactsSharing`)."""
    artifacts.grant_read(role)
    accounts = sorted(set(other_accounts))
    if not accounts:
        return
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject"],
            resources=[f"arn:aws:s3:::*/{keys}" for keys in REGISTERED_MODEL_KEYS],
            # Bucket names of other stages are not known here; the owning account is.
            conditions={"StringEquals": {"s3:ResourceAccount": accounts}},
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["kms:Decrypt"],
            resources=[f"arn:aws:kms:*:{account}:key/*" for account in accounts],
            conditions={"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}},
        )
    )


class ArtifactsSharing(Construct):
    """The owner's side: the project's other accounts may read this environment's registered versions."""

    def __init__(
        self, scope: Construct, construct_id: str, *, artifacts: s3.IBucket, key: kms.IKey, accounts: Sequence[str]
    ) -> None:
        super().__init__(scope, construct_id)
        accounts = sorted(set(accounts))
        if not accounts:
            return
        principals = [iam.AccountPrincipal(account) for account in accounts]
        artifacts.add_to_resource_policy(
            iam.PolicyStatement(
                sid="RegisteredModelsForOtherEnvironments",
                actions=["s3:GetObject"],
                principals=principals,
                resources=[artifacts.arn_for_objects(keys) for keys in REGISTERED_MODEL_KEYS],
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="RegisteredModelsForOtherEnvironments",
                actions=["kms:Decrypt"],
                principals=principals,
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"kms:ViaService": f"s3.{Stack.of(key).region}.amazonaws.com"}},
            )
        )
