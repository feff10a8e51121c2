"""The events of the approval workflow (this module owns their shapes).

In:
- `aws.sagemaker` / `SageMaker Model Package State Change` (registry account): a new version to approve in the
  chain's first environment.
- `modelgate.promotion` / `ModelGate Promotion Requested`: approve a version for the next environment. Put on
  the TARGET environment's ModelGate bus (`promotion_bus_name`: not the default bus, which any principal of the
  account may write to) by the previous environment's post-inference Lambda (cross-account) or by
  `modelgate request-promotion`; the bus admits only principals tagged PROMOTER_TAG = the project.
- `aws.sagemaker` / `SageMaker Transform Job State Change` (Completed), or `modelgate.inference` /
  `ModelGate Inference Completed` from other batch-inference runners: the post-inference trigger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelgate.chain import Chain, UnknownEnvironmentError

REGISTRY_SOURCE = "aws.sagemaker"
REGISTRY_DETAIL_TYPE = "SageMaker Model Package State Change"
TRANSFORM_DETAIL_TYPE = "SageMaker Transform Job State Change"
PROMOTION_SOURCE = "modelgate.promotion"
PROMOTION_DETAIL_TYPE = "ModelGate Promotion Requested"
INFERENCE_SOURCE = "modelgate.inference"
INFERENCE_DETAIL_TYPE = "ModelGate Inference Completed"
# Transform jobs say which model version they ran with this tag (or through their SageMaker model's package).
MODEL_PACKAGE_TAG = "modelgate:model-package-arn"
MAX_METRICS = 50
PROMOTER_TAG = "modelgate:promoter"  # IAM principal tag (value: the project) of those who may request promotions


def promotion_bus_name(project: str, environment: str) -> str:
    """The event bus of `environment` that carries promotion requests: a name both sides derive (the previous
    environment may live in another account, where CDK cannot pass references)."""
    if not environment or not all(c.isalnum() or c in "-_." for c in environment):
        raise ValueError(f"{environment!r} is not an environment name")
    return f"{project}-{environment}-promotions"


class EventFormatError(ValueError):
    """An event this workflow cannot act on; the message says what is wrong with it."""


@dataclass(frozen=True)
class ApprovalRequest:
    """Ask the approvers of `environment` to decide on one model version."""

    model_package_arn: str
    environment: str
    request_id: str  # one e-mail per recipient per request id (retries and duplicates send nothing)
    source_environment: str | None = None  # where it was approved and ran before; None for the first environment
    requested_by: str = "the model registry"
    run: str | None = None  # the inference run that prompted a promotion
    metrics: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # the run's metrics, as text


def _detail(event: Any) -> Mapping[str, Any]:
    if not isinstance(event, Mapping) or not isinstance(event.get("detail"), Mapping):
        raise EventFormatError("not an EventBridge event (no 'detail' object)")
    return event["detail"]


def _metrics(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw in (None, {}):
        return ()
    if not isinstance(raw, Mapping):
        raise EventFormatError("'metrics' must be an object of name -> value")
    if len(raw) > MAX_METRICS:
        raise EventFormatError(f"'metrics' has {len(raw)} entries; at most {MAX_METRICS}")
    return tuple((str(name)[:100], str(value)[:200]) for name, value in raw.items())


def parse_request_event(event: Any, chain: Chain) -> ApprovalRequest:
    """A registry state-change event or a promotion request, as an ApprovalRequest (environments of `chain`)."""
    detail = _detail(event)
    source, detail_type = event.get("source"), event.get("detail-type")
    if (source, detail_type) == (REGISTRY_SOURCE, REGISTRY_DETAIL_TYPE):
        arn = detail.get("ModelPackageArn")
        if not isinstance(arn, str) or not arn:
            raise EventFormatError("model package state change without ModelPackageArn")
        # One request per registration: duplicate state-change events for the same version send nothing more.
        return ApprovalRequest(model_package_arn=arn, environment=chain.first, request_id="registered")
    if (source, detail_type) == (PROMOTION_SOURCE, PROMOTION_DETAIL_TYPE):
        missing = [k for k in ("model_package_arn", "target_environment", "request_id") if not detail.get(k)]
        if missing:
            raise EventFormatError(f"promotion request lacks: {', '.join(missing)}")
        try:
            target = chain.check(str(detail["target_environment"]))
            source_env = detail.get("source_environment")
            source_env = chain.check(str(source_env)) if source_env else None
        except UnknownEnvironmentError as error:
            raise EventFormatError(str(error)) from None
        return ApprovalRequest(
            model_package_arn=str(detail["model_package_arn"]),
            environment=target,
            request_id=str(detail["request_id"])[:200],
            source_environment=source_env,
            requested_by=str(detail.get("requested_by") or "unknown")[:200],
            run=str(detail["run"])[:300] if detail.get("run") else None,
            metrics=_metrics(detail.get("metrics")),
        )
    raise EventFormatError(f"unexpected event {source!r} / {detail_type!r}")


def promotion_entry(request: ApprovalRequest, event_bus: str) -> dict[str, str]:
    """The PutEvents entry asking `request.environment`'s approval stack to e-mail its approvers."""
    detail = {
        "model_package_arn": request.model_package_arn,
        "target_environment": request.environment,
        "source_environment": request.source_environment,
        "request_id": request.request_id,
        "requested_by": request.requested_by,
        "run": request.run,
        "metrics": dict(request.metrics),
    }
    return {
        "Source": PROMOTION_SOURCE,
        "DetailType": PROMOTION_DETAIL_TYPE,
        "Detail": json.dumps(detail),
        "EventBusName": event_bus,
        "Resources": [request.model_package_arn],
    }


@dataclass(frozen=True)
class InferenceRun:
    """A finished batch-inference run in one environment."""

    run_id: str
    environment: str | None  # None: the environment of the Lambda that received it
    model_package_arn: str | None  # None: find it from the transform job
    transform_job_name: str | None = None
    metrics: tuple[tuple[str, str], ...] = ()


def parse_inference_event(event: Any, chain: Chain) -> InferenceRun | None:
    """The run of a post-inference event, or None for a run that did not complete (nothing to promote)."""
    detail = _detail(event)
    source, detail_type = event.get("source"), event.get("detail-type")
    if (source, detail_type) == (REGISTRY_SOURCE, TRANSFORM_DETAIL_TYPE):
        name = detail.get("TransformJobName")
        if not isinstance(name, str) or not name:
            raise EventFormatError("transform job state change without TransformJobName")
        if detail.get("TransformJobStatus") != "Completed":
            return None
        arn = detail.get("TransformJobArn") or name
        return InferenceRun(run_id=str(arn), environment=None, model_package_arn=None, transform_job_name=name)
    if (source, detail_type) == (INFERENCE_SOURCE, INFERENCE_DETAIL_TYPE):
        missing = [k for k in ("run_id", "model_package_arn") if not detail.get(k)]
        if missing:
            raise EventFormatError(f"inference-completed event lacks: {', '.join(missing)}")
        if detail.get("status", "Completed") != "Completed":
            return None
        environment = detail.get("environment")
        try:
            environment = chain.check(str(environment)) if environment else None
        except UnknownEnvironmentError as error:
            raise EventFormatError(str(error)) from None
        return InferenceRun(
            run_id=str(detail["run_id"])[:300],
            environment=environment,
            model_package_arn=str(detail["model_package_arn"]),
            metrics=_metrics(detail.get("metrics")),
        )
    raise EventFormatError(f"unexpected event {source!r} / {detail_type!r}")
