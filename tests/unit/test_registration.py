"""The CreateModelPackage request every registration sends (the pipeline's step must match it)."""

from __future__ import annotations

import pytest

from modelgate.registry import PENDING
from pipelines.registration import ModelVersion, RegistrationError, model_package_request

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-tritonserver:25.09-py3"


def test_request_is_pending_everywhere_with_metrics_and_the_triton_container():
    version = ModelVersion(
        "energy-forecast", "s3://artifacts-1/models/run-7/", IMAGE, "ds@example.com", "d", ("ml.g5.xlarge",)
    )
    request = model_package_request(version)
    assert request["ModelPackageGroupName"] == "energy-forecast"
    assert request["ModelApprovalStatus"] == PENDING
    # No environment key: the pipeline does not know the chain, and an environment without one reads as pending.
    assert request["CustomerMetadataProperties"] == {"registered_by": "ds@example.com"}
    assert request["ModelMetrics"] == {
        "ModelQuality": {
            "Statistics": {"ContentType": "application/json", "S3Uri": "s3://artifacts-1/models/run-7/evaluation.json"}
        }
    }
    specification = request["InferenceSpecification"]
    assert specification["Containers"] == [{"Image": IMAGE, "ModelDataUrl": "s3://artifacts-1/models/run-7/"}]
    assert specification["SupportedRealtimeInferenceInstanceTypes"] == ["ml.g5.xlarge"]
    assert "application/json" in specification["SupportedContentTypes"]


def test_without_optional_fields_the_request_stays_minimal():
    request = model_package_request(ModelVersion("g", "s3://bucket-a/v1/", IMAGE))
    assert "registered_by" not in request["CustomerMetadataProperties"]
    assert "ModelPackageDescription" not in request
    assert "SupportedRealtimeInferenceInstanceTypes" not in request["InferenceSpecification"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_data_url": "s3://bucket-a/v1"}, "ending with '/'"),
        ({"model_data_url": "/local/models/"}, "s3:// prefix"),
        ({"image_uri": ""}, "image_uri"),
        ({"registered_by": "someone"}, "e-mail"),
    ],
)
def test_bad_values_are_refused_before_anything_is_sent(changes, message):
    arguments = {"model_package_group": "g", "model_data_url": "s3://bucket-a/v1/", "image_uri": IMAGE, **changes}
    with pytest.raises(RegistrationError, match=message):
        ModelVersion(**arguments)


def test_the_registering_execution_is_named_on_the_version():
    """Separation of duties: the approval reads who really started the run from this execution's CreatedBy."""
    execution = "arn:aws:sagemaker:eu-west-1:111111111111:pipeline/modelgate-training/execution/abc123"
    version = ModelVersion("g", "s3://bucket-a/v1/", IMAGE, "ds@example.com", pipeline_execution_arn=execution)
    assert model_package_request(version)["CustomerMetadataProperties"]["pipeline_execution_arn"] == execution
