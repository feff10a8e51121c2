"""modelgate.serving.invoke: SageMaker's errors -> HTTP, and the deployment record's cache around a version switch."""

from __future__ import annotations

import io
import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from modelgate.serving.access import ModelAccess
from modelgate.serving.deployment import Deployment, deployment_key
from modelgate.serving.invoke import ApiError, DeploymentCache, invoke_model, map_sagemaker_error

BODY = json.dumps({"inputs": [{"name": "READINGS", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}).encode()
EVERYTHING = ModelAccess(True, frozenset())
GROUP = "energy-forecast"


def client_error(code: str, message: str = "", status: int = 400, **extra) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, **extra}, "InvokeEndpoint")


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (client_error("ModelNotReadyException", "Model is loading", 429), 503, "model_loading", True),
        (client_error("ThrottlingException", "Rate exceeded"), 429, "throttled", True),
        (client_error("ServiceUnavailable", "", 503), 503, "endpoint_unavailable", True),
        (
            client_error(
                "ValidationError",
                "Failed to download model data(bucket: b, key: models/v3/acme.tar.gz). Please ensure ...",
            ),
            404,
            "model_not_found",
            False,
        ),
        (client_error("ValidationError", "Endpoint ep of account 1 not found."), 503, "endpoint_unavailable", True),
        (client_error("ValidationError", "Body exceeds the limit"), 400, "invalid_inference_request", False),
        (
            client_error("ModelError", "...", 424, OriginalStatusCode=400, OriginalMessage='{"error":"bad shape"}'),
            400,
            "invalid_inference_request",
            False,
        ),
        (
            client_error("ModelError", "...", 424, OriginalStatusCode=500, OriginalMessage="boom"),
            502,
            "inference_failed",
            False,
        ),
        (client_error("InternalFailure", "", 500), 502, "inference_failed", False),
        (client_error("InternalDependencyException", "", 530), 502, "inference_failed", False),
        (ReadTimeoutError(endpoint_url="https://runtime"), 504, "inference_timeout", False),
        (EndpointConnectionError(endpoint_url="https://runtime"), 502, "inference_failed", False),
        (RuntimeError("anything else"), 502, "inference_failed", False),
    ],
)
def test_sagemaker_errors_map_to_specific_http_answers(error, status, code, retry_after):
    mapped = map_sagemaker_error(error)
    assert (mapped.status, mapped.code) == (status, code)
    assert ("Retry-After" in mapped.headers()) is retry_after
    assert "Traceback" not in mapped.body().decode()


def test_tritons_own_message_is_passed_on_for_client_errors_and_nothing_else():
    error = client_error("ModelError", "internal detail", 424, OriginalStatusCode=400, OriginalMessage='{"error":"x"}')
    assert json.loads(map_sagemaker_error(error).body()) == {"error": "x", "code": "invalid_inference_request"}


class FakeS3:
    def __init__(self, *records: Deployment) -> None:
        self.records = list(records)
        self.reads = 0

    def get_object(self, Bucket, Key):
        assert Key == deployment_key("energy-forecast") == "deployments/energy-forecast.json"
        self.reads += 1
        record = self.records[0] if len(self.records) == 1 else self.records.pop(0)
        return {"Body": io.BytesIO(record.to_json().encode())}


class FakeRuntime:
    def __init__(self, available: set[str]) -> None:
        self.available = available
        self.calls: list[str] = []

    def invoke_endpoint(self, **arguments):
        self.calls.append(arguments["TargetModel"])
        if arguments["TargetModel"] not in self.available:
            raise client_error("ValidationError", "Failed to download model data(bucket: b, key: k).")
        return {"Body": io.BytesIO(b'{"outputs": []}'), "ContentType": "application/json"}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def record(version: int | None, *customers: str) -> Deployment:
    return Deployment(GROUP, "sandbox", version, None, customers, "2026-11-22T00:00:00+00:00")


def call(runtime, cache, model="acme", access=EVERYTHING):
    return invoke_model(
        runtime=runtime,
        deployments=cache,
        endpoint_name="ep",
        model=model,
        access=access,
        body=BODY,
        content_type="application/json",
    )


def test_a_stale_record_is_reread_once_when_sagemaker_no_longer_has_its_version():
    s3 = FakeS3(record(1, "acme"), record(2, "acme"))
    cache = DeploymentCache(s3, "bucket", GROUP, clock=Clock(), ttl_seconds=60, min_refresh_seconds=0)
    runtime = FakeRuntime({"v2/acme.tar.gz"})
    assert call(runtime, cache).model_version == 2
    assert runtime.calls == ["v1/acme.tar.gz", "v2/acme.tar.gz"]


def test_a_customer_added_by_a_new_deployment_is_found_before_the_cache_expires():
    s3 = FakeS3(record(1, "acme"), record(2, "acme", "globex"))
    cache = DeploymentCache(s3, "bucket", GROUP, clock=Clock(), ttl_seconds=60, min_refresh_seconds=0)
    assert call(FakeRuntime({"v2/globex.tar.gz"}), cache, model="globex").model_version == 2


def test_unknown_models_cannot_make_every_request_reread_the_record():
    clock = Clock()
    s3 = FakeS3(record(1, "acme"))
    cache = DeploymentCache(s3, "bucket", GROUP, clock=clock, ttl_seconds=60, min_refresh_seconds=2)
    runtime = FakeRuntime({"v1/acme.tar.gz"})
    for _ in range(20):
        with pytest.raises(ApiError) as refused:
            call(runtime, cache, model="nobody")
        assert refused.value.status == 404
    assert s3.reads == 1, "re-reads are rate-limited"
    assert runtime.calls == [], "models outside the deployment never reach SageMaker"


def test_a_withdrawn_approval_serves_nothing_and_a_model_the_token_does_not_allow_is_403():
    cache = DeploymentCache(FakeS3(record(None)), "bucket", GROUP, clock=Clock())
    with pytest.raises(ApiError) as refused:
        call(FakeRuntime(set()), cache)
    assert refused.value.status == 404
    only_globex = ModelAccess(False, frozenset({"globex"}))
    cache = DeploymentCache(FakeS3(record(1, "acme")), "b", GROUP)
    with pytest.raises(ApiError) as refused:
        call(FakeRuntime({"v1/acme.tar.gz"}), cache, access=only_globex)
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


def test_a_missing_record_means_nothing_was_ever_deployed():
    class NoRecord:
        def get_object(self, Bucket, Key):
            raise client_error("NoSuchKey", "The specified key does not exist.", 404)

    with pytest.raises(ApiError) as refused:
        call(FakeRuntime(set()), DeploymentCache(NoRecord(), "bucket", GROUP))
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (503, "not_deployed", 60)


def test_the_lambda_checks_the_group_of_a_grant_again_before_calling_sagemaker():
    """Defence in depth behind the authorizer's policy: a grant for another group's customers is 403 here too."""
    runtime = FakeRuntime({"v1/acme.tar.gz"})
    cache = DeploymentCache(FakeS3(record(1, "acme")), "bucket", GROUP)
    for grants in ("churn-scores/*", "churn-scores/acme", "energy-forecast/globex"):
        with pytest.raises(ApiError) as refused:
            call(runtime, cache, access=ModelAccess.from_context(grants))
        assert (refused.value.status, refused.value.code) == (403, "forbidden"), grants
        assert "'acme' of 'energy-forecast'" in refused.value.message
    assert runtime.calls == []
    for grants in ("energy-forecast/*", "energy-forecast/acme", "acme"):
        assert call(runtime, cache, access=ModelAccess.from_context(grants)).model_version == 1
