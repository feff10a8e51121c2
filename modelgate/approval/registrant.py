"""Who registered a model version, as far as AWS can tell: separation of duties fails closed on it.

Two sources, both kept and both shown to approvers:
- `registered_by` (modelgate.registry.REGISTERED_BY_KEY): the e-mail the run's starter TYPED (a pipeline parameter).
- the AWS principals behind the version: `CreatedBy` of the pipeline execution that registered it (the person who
  called StartPipelineExecution: IAM identity, source identity or Studio user profile) and of the model package
  itself (who called CreateModelPackage). The first environment's request Lambda (registry account) reads them once, at
  registration, and records them in the version's metadata (`started_by`, `started_by.names`), so every
  environment's approval API sees them without calling the registry account's pipeline APIs.

An approver is the registrant when any of their identities (verified e-mail, any e-mail claim, username,
subject) equals, canonically, the typed e-mail or one of the principals' names. A version whose registrant is
not known (no typed e-mail, or principals not recorded) cannot be approved until an administrator records who
registered it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelgate.registry import (
    PIPELINE_EXECUTION_KEY,
    REGISTERED_BY_KEY,
    STARTED_BY_KEY,
    STARTED_BY_NAMES_KEY,
    customer_metadata,
)

MAX_METADATA_VALUE = 256  # CustomerMetadataProperties value limit
_EXECUTION_ARN = re.compile(
    r"arn:aws[a-z-]*:sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):pipeline/[^/]+/execution/[a-z0-9]+"
)


class RegistrantUnknown(Exception):
    """Who registered the version cannot be established; the message says what an administrator must do."""


def canonical(identity: str) -> str:
    """One spelling per identity: Unicode NFKC, case-folded, surrounding blanks removed."""
    return unicodedata.normalize("NFKC", identity).strip().casefold()


def principal_names(created_by: Mapping[str, Any] | None) -> tuple[str, set[str]]:
    """(display, canonical names) of a SageMaker `UserContext` (CreatedBy). Names are what a person could sign in
    as: an assumed role's session name (IAM Identity Center and most SSO set it to the user name or e-mail),
    an IAM user's name, the source identity, a Studio user profile name."""
    created_by = created_by or {}
    iam = created_by.get("IamIdentity") or {}
    names: set[str] = set()
    arn = str(iam.get("Arn") or "")
    if arn:
        names.add(arn)
        resource = arn.split(":", 5)[-1]
        if resource.startswith(("assumed-role/", "user/")):
            names.add(resource.rsplit("/", 1)[-1])
    for value in (iam.get("SourceIdentity"), created_by.get("UserProfileName")):
        if value:
            names.add(str(value))
    display = arn or str(created_by.get("UserProfileArn") or created_by.get("UserProfileName") or "")
    if iam.get("SourceIdentity"):
        display += f" (source identity {iam['SourceIdentity']})"
    return display, {canonical(name) for name in names if name.strip()}


@dataclass(frozen=True)
class Registrant:
    typed: str | None  # registered_by as typed when the run started
    started_by: str | None  # the recorded AWS principal (display)
    names: frozenset[str]  # canonical identities of the principals

    @classmethod
    def of(cls, metadata: Mapping[str, str]) -> Registrant:
        typed = (metadata.get(REGISTERED_BY_KEY) or "").strip() or None
        started_by = (metadata.get(STARTED_BY_KEY) or "").strip() or None
        names = frozenset(canonical(n) for n in (metadata.get(STARTED_BY_NAMES_KEY) or "").split(",") if n.strip())
        return cls(typed, started_by, names)

    @property
    def identities(self) -> frozenset[str]:
        return self.names | ({canonical(self.typed)} if self.typed else set())

    def check_known(self, label: str) -> None:
        if not self.typed:
            raise RegistrantUnknown(
                f"{label} does not say who registered it (custom metadata '{REGISTERED_BY_KEY}'), so separation of "
                "duties cannot be enforced. An administrator must record the registrant's e-mail: "
                f"modelgate set-registrant --model <group> --version <n> --email <address>."
            )
        if self.started_by is None:
            raise RegistrantUnknown(
                f"{label}: the AWS principal that registered it is not recorded (custom metadata "
                f"'{STARTED_BY_KEY}'), so the typed '{REGISTERED_BY_KEY}' cannot be checked. The first environment's "
                "approval service records it when the version's registration event arrives; if that failed, an "
                "administrator must record who registered it: modelgate set-registrant --model <group> --version <n> "
                "--email <address>."
            )

    def includes(self, identities: Iterable[str]) -> bool:
        """Whether any of `identities` is the registrant (canonical comparison)."""
        mine = self.identities
        return any(canonical(value) in mine for value in identities if value and value.strip())


def _execution_created_by(sagemaker: Any, arn: str, *, account: str, region: str) -> Mapping[str, Any]:
    found = _EXECUTION_ARN.fullmatch(arn)
    if not found or (found["account"], found["region"]) != (account, region):
        raise RegistrantUnknown(
            f"the version names pipeline execution {arn!r}, which is not a pipeline execution of the registry "
            f"({account}, {region}): who started the run cannot be established"
        )
    try:
        described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    except sagemaker.exceptions.ClientError as error:
        raise RegistrantUnknown(
            f"pipeline execution {arn} cannot be described ({error.response['Error']['Code']}): who started the "
            "run cannot be established"
        ) from None
    return described.get("CreatedBy") or {}


def record_principals(sagemaker: Any, described: Mapping[str, Any], *, account: str, region: str) -> dict[str, str]:
    """The metadata keys recording who started the run and who registered the package (registry account only).

    `described` is DescribeModelPackage's answer. Raises RegistrantUnknown when the principals cannot be read."""
    metadata = described.get("CustomerMetadataProperties") or {}
    package_display, names = principal_names(described.get("CreatedBy"))
    display = package_display
    execution = (metadata.get(PIPELINE_EXECUTION_KEY) or "").strip()
    if execution:
        execution_display, execution_names = principal_names(
            _execution_created_by(sagemaker, execution, account=account, region=region)
        )
        names |= execution_names
        display = execution_display or display
    joined = ",".join(sorted(name for name in names if "," not in name))
    if not display or not names or len(joined) > MAX_METADATA_VALUE:
        raise RegistrantUnknown("SageMaker does not say which AWS principal registered the version (CreatedBy)")
    return {STARTED_BY_KEY: display[:MAX_METADATA_VALUE], STARTED_BY_NAMES_KEY: joined}


def ensure_recorded(sagemaker: Any, arn: str, *, account: str, region: str) -> bool:
    """Record the principals on the version once (first record wins). True if this call wrote them."""
    described = sagemaker.describe_model_package(ModelPackageName=arn)
    metadata = described.get("CustomerMetadataProperties") or {}
    if metadata.get(STARTED_BY_KEY):
        return False
    recorded = record_principals(sagemaker, described, account=account, region=region)
    sagemaker.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus=described.get("ModelApprovalStatus") or "PendingManualApproval",
        CustomerMetadataProperties=customer_metadata(metadata, extra=recorded),  # the whole map (moto replaces)
    )
    return True
