"""cdk-nag wiring: AwsSolutions checks on every stack, and path-scoped suppressions with reasons.

Aspects added to an App do not cross Stage boundaries (each Stage synthesizes its own assembly), so checks are
added to every Stage and every top-level stack explicitly (`apply_nag`).

Suppressions always name one resource path and, for the granular IAM5 rule, the exact findings they accept
(`applies_to`): a new wildcard that nobody reviewed still fails the nag test.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Aspects, Stack
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import IConstruct

# Wildcard actions that CDK's own grant methods emit (e.g. Bucket.grant_read_write, Key.grant_encrypt_decrypt):
# AWS's documented action groups for reading/writing objects of ONE bucket or using ONE key.
S3_GRANT_ACTIONS = (
    "Action::s3:Abort*",
    "Action::s3:DeleteObject*",
    "Action::s3:GetBucket*",
    "Action::s3:GetObject*",
    "Action::s3:List*",
)
KMS_GRANT_ACTIONS = ("Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*")


def apply_nag(scope: IConstruct) -> None:
    Aspects.of(scope).add(AwsSolutionsChecks(verbose=True))


def regex(pattern: str) -> RegexAppliesTo:
    """An IAM5 finding matched by pattern, for findings that embed generated logical ids or the account."""
    return RegexAppliesTo(regex=f"/^{pattern}$/g")


def suppress(
    scope: IConstruct,
    path: str,
    reasons: dict[str, str],
    applies_to: dict[str, Iterable[str | RegexAppliesTo]] | None = None,
) -> None:
    """Suppress rules on one resource path (relative to `scope`, a stack or a construct in it), each rule with
    its own reason."""
    applies_to = applies_to or {}
    NagSuppressions.add_resource_suppressions_by_path(
        Stack.of(scope),
        f"/{scope.node.path}/{path}",
        [
            NagPackSuppression(
                id=rule,
                reason=reason,
                applies_to=list(applies_to[rule]) if rule in applies_to else None,
            )
            for rule, reason in reasons.items()
        ],
    )
