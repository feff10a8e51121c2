"""Reading model versions from the Model Registry and writing approval decisions back to it.

The registry lives in the registry account (the first environment of the chain: its account and region); later
environments reach it cross-account through the model package group's resource policy,
always addressing packages by ARN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelgate.chain import Chain
from modelgate.evaluation_report import (
    FORECAST_PLOT_FILE,
    SCHEMA_VERSION,
    EvaluationReport,
    EvaluationReportError,
    parse_report,
)
from modelgate.registry import (
    APPROVED,
    PENDING,
    REGISTERED_BY_KEY,
    REJECTED,
    customer_metadata,
    decided_at_key,
    decided_by_key,
)

_ARN = re.compile(
    r"arn:aws[a-z-]*:sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):model-package/(?P<group>[^/]+)/(?P<version>\d+)"
)
MAX_METRICS = 24  # an e-mail lists at most this many metrics; the report link has the rest
MAX_REPORT_BYTES = 1_000_000
MAX_PLOT_BYTES = 2_000_000  # embedded in the report page (a Lambda response holds at most 6 MB)


class UnknownModelVersion(LookupError):
    pass


class ForeignModelPackage(ValueError):
    """A model package outside the group (or registry) this environment approves."""


def parse_model_package_arn(arn: str) -> tuple[str, str, str, int]:
    """(region, account, group name as the ARN spells it (lower case), version) of a versioned package ARN."""
    found = _ARN.fullmatch(arn or "")
    if not found:
        raise ForeignModelPackage(f"{arn!r} is not the ARN of a versioned model package")
    return found["region"], found["account"], found["group"], int(found["version"])


def check_model_package_arn(arn: str, *, group: str, account: str, region: str) -> int:
    """The version number, if `arn` is a version of `group` in the registry (account, region)."""
    arn_region, arn_account, arn_group, version = parse_model_package_arn(arn)
    if (arn_region, arn_account, arn_group) != (region, account, group.lower()):
        raise ForeignModelPackage(
            f"{arn} is not a version of model package group {group} in account {account} ({region})"
        )
    return version


def served_model(settings: Any, arn: str) -> Any:
    """The ModelApproval (of `settings`, an ApprovalSettings) whose group `arn` is a version of, in the registry
    this environment approves from; ForeignModelPackage for a package of any other group or registry."""
    arn_region, arn_account, arn_group, _ = parse_model_package_arn(arn)
    if (arn_region, arn_account) == (settings.registry_region, settings.registry_account):
        for model in settings.models:
            if model.group.lower() == arn_group:
                return model
    raise ForeignModelPackage(
        f"{arn} is not a version of a model package group this platform serves ({', '.join(settings.groups)}) "
        f"in account {settings.registry_account} ({settings.registry_region})"
    )


def group_of(settings: Any, arn: str) -> str:
    """For log lines: the served group `arn` belongs to, else the group as the ARN spells it, else "unknown"."""
    try:
        return served_model(settings, arn).group
    except ForeignModelPackage:
        found = _ARN.fullmatch(arn or "")
        return found["group"] if found else "unknown"


@dataclass(frozen=True)
class ModelVersion:
    arn: str
    group: str
    version: int
    created_at: datetime
    approval_status: str  # ModelApprovalStatus
    metadata: Mapping[str, str] = field(default_factory=dict)
    model_data_url: str | None = None
    metrics_uri: str | None = None
    description: str = ""

    @property
    def registered_by(self) -> str | None:
        value = (self.metadata.get(REGISTERED_BY_KEY) or "").strip()
        return value or None

    def state(self, environment: str, chain: Chain | None = None) -> str:
        """The approval state in `environment`. Before the chain's first environment decides, the registry's own
        status is the truth there (a version rejected in the console reads as rejected)."""
        if chain is not None and environment == chain.first and self.approval_status == REJECTED:
            return REJECTED
        return self.metadata.get(environment) or PENDING

    def decided_by(self, environment: str) -> str | None:
        return self.metadata.get(decided_by_key(environment))

    def decided_at(self, environment: str) -> str | None:
        return self.metadata.get(decided_at_key(environment))


def _model_version(described: Mapping[str, Any]) -> ModelVersion:
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
    statistics = ((described.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}
    return ModelVersion(
        arn=described["ModelPackageArn"],
        group=described["ModelPackageGroupName"],
        version=int(described["ModelPackageVersion"]),
        created_at=described["CreationTime"],
        approval_status=described.get("ModelApprovalStatus") or PENDING,
        metadata=dict(described.get("CustomerMetadataProperties") or {}),
        model_data_url=containers[0].get("ModelDataUrl"),
        metrics_uri=statistics.get("S3Uri"),
        description=described.get("ModelPackageDescription") or "",
    )


def read_model_version(sagemaker: Any, arn: str) -> ModelVersion:
    try:
        described = sagemaker.describe_model_package(ModelPackageName=arn)
    except sagemaker.exceptions.ClientError as error:
        code = error.response["Error"]["Code"]
        if code in ("ValidationException", "ResourceNotFound", "ResourceNotFoundException"):
            raise UnknownModelVersion(f"model package {arn} does not exist") from None
        raise
    if "ModelPackageVersion" not in described or "ModelPackageGroupName" not in described:
        raise ForeignModelPackage(f"{arn} is not a versioned model package of a group")
    return _model_version(described)


def list_model_versions(sagemaker: Any, group: str, limit: int | None = None) -> list[ModelVersion]:
    """Versions of `group` (name or ARN), newest first, fully described (metadata is not in the list call)."""
    summaries: list[dict] = []
    paginator = sagemaker.get_paginator("list_model_packages")
    for page in paginator.paginate(ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending"):
        summaries.extend(page["ModelPackageSummaryList"])
        if limit is not None and len(summaries) >= limit:
            break
    summaries.sort(key=lambda s: s.get("ModelPackageVersion", 0), reverse=True)
    if limit is not None:
        summaries = summaries[:limit]
    return [read_model_version(sagemaker, summary["ModelPackageArn"]) for summary in summaries]


def write_decision(
    sagemaker: Any,
    version: ModelVersion,
    *,
    chain: Chain,
    environment: str,
    approved: bool,
    decided_by: str,
    decided_at: str,
    reason: str,
) -> None:
    """Record one environment's decision in the registry. Idempotent: writing the same decision twice is a no-op.

    The whole metadata map is sent (moto replaces it; AWS merges), and the status is always sent explicitly
    (moto clears it when omitted). ModelApprovalStatus follows the chain's first environment, where the
    registry's own approval happens;
    later environments only change their metadata key, so the version stays Approved for the earlier ones.
    """
    state = APPROVED if approved else REJECTED
    metadata = customer_metadata(
        version.metadata,
        extra={decided_by_key(environment): decided_by[:256], decided_at_key(environment): decided_at},
        environments=chain,
        **{environment: state},
    )
    status = state if environment == chain.first else version.approval_status
    verb = "approved" if approved else "rejected"
    description = f"{environment}: {verb} by {decided_by} at {decided_at}" + (f": {reason}" if reason else "")
    sagemaker.update_model_package(
        ModelPackageArn=version.arn,
        ModelApprovalStatus=status,
        ApprovalDescription=description[:1024],
        CustomerMetadataProperties=metadata,
    )


# -- evaluation report ---------------------------------------------------------------------------------------
def _flatten(node: Any, prefix: str, out: list[tuple[str, float]]) -> None:
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        out.append((prefix, float(node)))
    elif isinstance(node, Mapping):
        for key in node:
            _flatten(node[key], f"{prefix}.{key}" if prefix else str(key), out)


def flatten_metrics(document: Any) -> list[tuple[str, float]]:
    """Numeric leaves of a metrics document as ('a.b.value', 1.23), in document order.

    SageMaker evaluation reports nest metrics (`{"regression_metrics": {"mape": {"value": 0.12}}}`); the
    trailing `.value` is dropped for readability.
    """
    found: list[tuple[str, float]] = []
    _flatten(document, "", found)
    return [(name.removesuffix(".value"), value) for name, value in found]


@dataclass(frozen=True)
class Evaluation:
    """A version's evaluation report as read for approvers: the pipeline's report when it is one, else the
    report's numbers as they are; `note` says what could not be read (never raises)."""

    uri: str | None
    report: EvaluationReport | None = None
    metrics: tuple[tuple[str, float], ...] = ()  # a report in another JSON format: its numeric leaves
    note: str | None = None


def read_evaluation(s3: Any, uri: str | None) -> Evaluation:
    if not uri:
        return Evaluation(uri, note="the model version has no evaluation report (ModelMetrics)")
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        return Evaluation(uri, note=f"evaluation report location {uri!r} is not an s3:// URI")
    bucket, key = uri[5:].split("/", 1)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_REPORT_BYTES + 1)
    except s3.exceptions.ClientError as error:
        return Evaluation(
            uri, note=f"evaluation report {uri} could not be read here ({error.response['Error']['Code']})"
        )
    if len(body) > MAX_REPORT_BYTES:
        return Evaluation(uri, note=f"evaluation report {uri} is larger than {MAX_REPORT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        return Evaluation(uri, note=f"evaluation report {uri} is not JSON")
    if isinstance(document, dict) and document.get("schema") == SCHEMA_VERSION:
        try:
            return Evaluation(uri, report=parse_report(body))
        except EvaluationReportError as error:
            return Evaluation(uri, note=f"evaluation report {uri} is not valid: {error}")
    metrics = flatten_metrics(document)  # a report in another format: its numbers, as they are
    if not metrics:
        return Evaluation(uri, note=f"evaluation report {uri} has no numeric metrics")
    if len(metrics) > MAX_METRICS:
        return Evaluation(
            uri, metrics=tuple(metrics[:MAX_METRICS]), note=f"{len(metrics) - MAX_METRICS} more metrics in {uri}"
        )
    return Evaluation(uri, metrics=tuple(metrics))


def read_forecast_plot(s3: Any, evaluation_uri: str | None) -> bytes | None:
    """The evaluation's forecast plot (FORECAST_PLOT_FILE next to the report), or None if there is none."""
    if not evaluation_uri or not evaluation_uri.startswith("s3://") or "/" not in evaluation_uri[5:]:
        return None
    bucket, key = evaluation_uri[5:].split("/", 1)
    key = f"{key.rsplit('/', 1)[0]}/{FORECAST_PLOT_FILE}" if "/" in key else FORECAST_PLOT_FILE
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_PLOT_BYTES + 1)
    except s3.exceptions.ClientError:
        return None
    return body if len(body) <= MAX_PLOT_BYTES and body.startswith(b"\x89PNG") else None
