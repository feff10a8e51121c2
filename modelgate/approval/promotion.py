"""After a batch-inference run in an environment: collect the run's metrics and ask the NEXT environment's
approvers to promote the model version (an event on that environment's bus; its approval stack e-mails them).

A run only leads to a promotion request when the version it ran is approved in this environment and still
pending in the next one: promotion skips no environment and is never requested past the chain's last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelgate.approval.events import MODEL_PACKAGE_TAG, ApprovalRequest, InferenceRun, promotion_entry
from modelgate.approval.model_versions import flatten_metrics, read_model_version, served_model
from modelgate.approval.services import Services
from modelgate.registry import APPROVED, PENDING

RUN_METRICS_FILE = "metrics.json"  # optional, written by the inference run next to its outputs


class PromotionRefused(Exception):
    """The run cannot lead to a promotion request (unknown model, wrong environment...)."""


@dataclass(frozen=True)
class PromotionOutcome:
    requested: ApprovalRequest | None
    note: str


def _transform_job(sagemaker: Any, name: str) -> dict:
    try:
        return sagemaker.describe_transform_job(TransformJobName=name)
    except sagemaker.exceptions.ClientError as error:
        raise PromotionRefused(f"transform job {name} cannot be described: {error}") from None


def model_package_of_transform_job(sagemaker: Any, job: dict) -> str:
    """The model version a transform job ran: its `modelgate:model-package-arn` tag, else its model's package."""
    tags = sagemaker.list_tags(ResourceArn=job["TransformJobArn"]).get("Tags", [])
    for tag in tags:
        if tag.get("Key") == MODEL_PACKAGE_TAG and tag.get("Value"):
            return tag["Value"]
    try:
        model = sagemaker.describe_model(ModelName=job["ModelName"])
    except sagemaker.exceptions.ClientError:
        model = {}
    for container in [model.get("PrimaryContainer") or {}, *(model.get("Containers") or [])]:
        if str(container.get("ModelPackageName", "")).startswith("arn:"):
            return container["ModelPackageName"]
    raise PromotionRefused(
        f"transform job {job['TransformJobName']} does not say which model version it ran: tag it with "
        f"{MODEL_PACKAGE_TAG}, or create its model from the model package"
    )


def transform_job_metrics(job: dict, s3: Any) -> tuple[tuple[str, str], ...]:
    """Facts of a finished transform job, plus the numbers of the run's own metrics.json if it wrote one."""
    metrics: list[tuple[str, str]] = []
    start, end = job.get("TransformStartTime"), job.get("TransformEndTime")
    if start and end:
        metrics.append(("duration_seconds", f"{(end - start).total_seconds():.0f}"))
    resources = job.get("TransformResources") or {}
    if resources:
        metrics.append(("instances", f"{resources.get('InstanceCount', '?')} x {resources.get('InstanceType', '?')}"))
    source = ((job.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
    if source.get("S3Uri"):
        metrics.append(("input", source["S3Uri"]))
    output = (job.get("TransformOutput") or {}).get("S3OutputPath")
    if output:
        metrics.append(("output", output))
        bucket, _, prefix = output.removeprefix("s3://").partition("/")
        key = f"{prefix.rstrip('/')}/{RUN_METRICS_FILE}".lstrip("/")
        try:
            document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read(1_000_000))
            metrics.extend((name, f"{value:.6g}") for name, value in flatten_metrics(document)[:30])
        except (s3.exceptions.ClientError, ValueError):
            pass  # the run wrote no metrics file (or not one we can read): the job's own facts remain
    return tuple(metrics)


def promote_after_inference(run: InferenceRun, services: Services) -> PromotionOutcome:
    settings = services.settings
    environment = run.environment or settings.environment
    if environment != settings.environment:
        raise PromotionRefused(f"run {run.run_id} is from {environment}; this is {settings.environment}")
    metrics = run.metrics
    arn = run.model_package_arn
    if run.transform_job_name:
        job = _transform_job(services.local_sagemaker, run.transform_job_name)
        arn = arn or model_package_of_transform_job(services.local_sagemaker, job)
        metrics = metrics or transform_job_metrics(job, services.s3)
    model = served_model(settings, arn or "")  # ForeignModelPackage for groups this platform does not serve
    version = read_model_version(services.sagemaker, arn)
    label = f"{model.model} ({version.group}) v{version.version}"
    chain = settings.chain
    if version.state(environment, chain) != APPROVED:
        return PromotionOutcome(None, f"{label} ran in {environment} but is not approved there: nothing to promote")
    target = chain.next(environment)
    if target is None:
        return PromotionOutcome(None, f"{label} ran in {environment}, the last environment: nothing to promote")
    if version.state(target, chain) != PENDING:
        return PromotionOutcome(None, f"{label} is already {version.state(target, chain).lower()} for {target}")
    if not settings.next_event_bus:
        raise PromotionRefused(f"no event bus configured for {target} (setting of the {environment} stack)")
    request = ApprovalRequest(
        model_package_arn=version.arn,
        environment=target,
        request_id=f"run:{run.run_id}",
        source_environment=environment,
        requested_by=f"post-inference run in {environment}",
        run=run.run_id,
        metrics=tuple(metrics),
    )
    result = services.events.put_events(Entries=[promotion_entry(request, settings.next_event_bus)])
    if result.get("FailedEntryCount"):
        entry = result["Entries"][0]
        raise RuntimeError(f"could not put the promotion request: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}")
    return PromotionOutcome(request, f"asked the {target} approvers to promote {label} (run {run.run_id})")
