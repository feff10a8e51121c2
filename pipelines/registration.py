"""Registration of a model version in the Model Registry: THE CreateModelPackage request.

The pipeline's registration step (pipelines/definition.py) must send the same request (its test compares them);
the local runner sends it with `register()`. A version:
- belongs to the environment's model package group, with status PendingManualApproval and custom metadata
  dev/test/uat/prod = PendingManualApproval (modelgate.registry.initial_customer_metadata()), which starts the
  approval flow; `registered_by` (who started the run) lets the approval refuse self-approval;
- has ModelMetrics.ModelQuality.Statistics = the evaluation report (modelgate.evaluation_report);
- has one inference container: the SageMaker Triton image (infra.triton_images.image_uri) with the version's
  S3 prefix as model data. That prefix holds every `<customer>.tar.gz`, manifest.json and evaluation.json
  (pipelines/steps/package.py): a multi-model endpoint's ModelDataUrl is such a prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelgate.evaluation_report import CONTENT_TYPE, REPORT_FILE
from modelgate.registry import PENDING, PIPELINE_EXECUTION_KEY, initial_customer_metadata

# The approval workflow reads it (modelgate.registry.REGISTERED_BY_KEY on the approval branch: same value).
REGISTERED_BY_KEY = "registered_by"
# What a SageMaker Triton endpoint accepts: KServe v2 JSON, or its binary tensor extension.
CONTENT_TYPES = ("application/json", "application/vnd.sagemaker-triton.binary+json")
RESPONSE_TYPES = ("application/json",)
_S3_PREFIX = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/(?:[^\s]*/)?$")


class RegistrationError(ValueError):
    pass


@dataclass(frozen=True)
class ModelVersion:
    """What is registered: values, never pipeline placeholders (the pipeline builds the same shape with its own)."""

    model_package_group: str
    model_data_url: str  # s3://bucket/prefix/ (ends with '/'): the version's archives
    image_uri: str  # infra.triton_images.image_uri(region, config serving.triton_version)
    registered_by: str | None = None  # e-mail of whoever started the run (typed: the approval checks it)
    description: str = ""
    inference_instance_types: tuple[str, ...] = ()  # e.g. the environments' serving.instance_type
    pipeline_execution_arn: str | None = None  # the run that registers it: its CreatedBy is who really started it

    def __post_init__(self) -> None:
        if not _S3_PREFIX.match(self.model_data_url):
            raise RegistrationError(
                f"model_data_url must be an s3:// prefix ending with '/', got {self.model_data_url!r}"
            )
        if not self.image_uri or " " in self.image_uri:
            raise RegistrationError(f"image_uri must be a container image URI, got {self.image_uri!r}")
        if self.registered_by is not None and "@" not in self.registered_by:
            raise RegistrationError(f"registered_by must be an e-mail address, got {self.registered_by!r}")

    @property
    def evaluation_report_uri(self) -> str:
        return self.model_data_url + REPORT_FILE


def model_package_request(version: ModelVersion) -> dict[str, Any]:
    """Keyword arguments of sagemaker.create_model_package for `version`."""
    metadata = initial_customer_metadata()
    if version.registered_by:
        metadata[REGISTERED_BY_KEY] = version.registered_by
    if version.pipeline_execution_arn:
        metadata[PIPELINE_EXECUTION_KEY] = version.pipeline_execution_arn
    specification: dict[str, Any] = {
        "Containers": [{"Image": version.image_uri, "ModelDataUrl": version.model_data_url}],
        "SupportedContentTypes": list(CONTENT_TYPES),
        "SupportedResponseMIMETypes": list(RESPONSE_TYPES),
    }
    if version.inference_instance_types:
        specification["SupportedRealtimeInferenceInstanceTypes"] = sorted(set(version.inference_instance_types))
    request: dict[str, Any] = {
        "ModelPackageGroupName": version.model_package_group,
        "ModelApprovalStatus": PENDING,
        "CustomerMetadataProperties": metadata,
        "ModelMetrics": {
            "ModelQuality": {"Statistics": {"ContentType": CONTENT_TYPE, "S3Uri": version.evaluation_report_uri}}
        },
        "InferenceSpecification": specification,
    }
    if version.description:
        request["ModelPackageDescription"] = version.description[:1024]
    return request


def ensure_model_package_group(sagemaker: Any, group: str, description: str = "ModelGate forecasting models") -> None:
    """Create the group when it does not exist: local runs only (in AWS the Storage stack owns it)."""
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=group)
    except sagemaker.exceptions.ClientError as error:
        if error.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
            raise
        sagemaker.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription=description)


def register(sagemaker: Any, version: ModelVersion) -> str:
    """Register `version`; returns the model package ARN."""
    return sagemaker.create_model_package(**model_package_request(version))["ModelPackageArn"]
