"""Invoke one customer's model on its group's multi-model endpoint, and map every failure to HTTP.

`{group}` in the route picks the model group (its endpoint and its deployment record, nothing else), `{customer}`
the customer id; the group's deployment record (cached, refreshed on a miss) turns it into the TargetModel of the
deployed version. Customers outside the record are never sent to SageMaker, so nothing unapproved is reachable
through the API even if an object were left under the endpoint's prefix, and a customer of one group is never
looked up in another group's record or endpoint.

SageMaker's errors, as the API reports them (never a bare 500 or a stack trace):
    model not in the deployment / TargetModel not found    404 model_not_found
    ModelNotReadyException (the MME is loading the model)  503 model_loading + Retry-After
    ThrottlingException                                     429 throttled + Retry-After
    ServiceUnavailable, endpoint missing or not in service 503 endpoint_unavailable + Retry-After
    ModelError 4xx (Triton refused the tensors)            400 invalid_inference_request (Triton's message)
    ModelError 5xx, InternalFailure, anything else          502 inference_failed
    timeout talking to SageMaker                            504 inference_timeout
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from modelgate.model_repository import InvalidCustomerIdError, check_customer_id
from modelgate.serving.access import ModelAccess
from modelgate.serving.deployment import Deployment, DeploymentFormatError, ModelNotDeployed, deployment_key
from modelgate.serving.protocol import JSON, InvalidRequest, parse_content_type, validate_request

RETRY_AFTER_LOADING = 5
RETRY_AFTER_THROTTLED = 1
RETRY_AFTER_UNAVAILABLE = 30
_MESSAGE_LIMIT = 512
# How SageMaker reports a TargetModel it cannot find under the endpoint's ModelDataUrl.
_TARGET_MISSING = re.compile(r"download model data|model .*not found|could not find .*model|no such key", re.I)
_ENDPOINT_MISSING = re.compile(r"endpoint .* not found|could not find endpoint", re.I)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    def body(self) -> bytes:
        # {"error": "<message>"} is the KServe v2 error shape Triton clients already parse.
        return json.dumps({"error": self.message, "code": self.code}).encode()


@dataclass(frozen=True)
class InferenceResult:
    body: bytes
    content_type: str
    model_version: int


@dataclass
class DeploymentCache:
    """A group's deployment record, re-read after `ttl_seconds` or on demand (at most every `min_refresh_seconds`)."""

    s3: object
    bucket: str
    model_package_group: str
    clock: Callable[[], float] = time.monotonic
    ttl_seconds: float = 10.0
    min_refresh_seconds: float = 2.0
    _record: Deployment | None = field(default=None, init=False)
    _read_at: float | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _read(self) -> Deployment:
        try:
            key = deployment_key(self.model_package_group)
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return Deployment.from_json(body)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                message = f"no version of {self.model_package_group!r} is deployed in this environment yet"
                raise ApiError(503, "not_deployed", message, 60) from None
            raise ApiError(502, "deployment_unreadable", "the serving deployment record cannot be read") from None
        except DeploymentFormatError:
            raise ApiError(502, "deployment_unreadable", "the serving deployment record is malformed") from None

    def get(self, refresh: bool = False) -> Deployment:
        with self._lock:
            now = self.clock()
            age = None if self._read_at is None else now - self._read_at
            if age is None or age > self.ttl_seconds or (refresh and age >= self.min_refresh_seconds):
                self._record, self._read_at = self._read(), now
            return self._record


def check_model_id(model: str | None) -> str:
    try:
        return check_customer_id(model or "")
    except InvalidCustomerIdError as error:
        raise ApiError(400, "invalid_model", str(error)) from None


def _triton_message(original: str | None) -> str:
    """Triton answers errors as {"error": "..."}; pass its message on, trimmed, never anything else."""
    if not original:
        return "the model rejected the request"
    try:
        message = json.loads(original).get("error") or original
    except (json.JSONDecodeError, AttributeError):
        message = original
    return str(message)[:_MESSAGE_LIMIT]


def map_sagemaker_error(error: Exception) -> ApiError:
    if isinstance(error, ReadTimeoutError):
        return ApiError(504, "inference_timeout", "the model did not answer in time")
    if isinstance(error, ConnectTimeoutError):
        return ApiError(503, "endpoint_unavailable", "the inference endpoint is unreachable", RETRY_AFTER_UNAVAILABLE)
    if isinstance(error, BotoCoreError):
        return ApiError(502, "inference_failed", "the inference endpoint could not be called")
    if not isinstance(error, ClientError):
        return ApiError(502, "inference_failed", "inference failed")
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "") or ""
    if code == "ModelNotReadyException":
        return ApiError(503, "model_loading", "the model is being loaded; retry shortly", RETRY_AFTER_LOADING)
    if code in ("ThrottlingException", "TooManyRequestsException", "ThrottledException"):
        return ApiError(429, "throttled", "too many requests for the inference endpoint", RETRY_AFTER_THROTTLED)
    if code == "ServiceUnavailable":
        return ApiError(503, "endpoint_unavailable", "the inference endpoint is unavailable", RETRY_AFTER_LOADING)
    if code == "ValidationError" and _ENDPOINT_MISSING.search(message):
        return ApiError(503, "endpoint_unavailable", "the endpoint is not in service", RETRY_AFTER_UNAVAILABLE)
    if code == "ValidationError" and _TARGET_MISSING.search(message):
        return ApiError(404, "model_not_found", "the model is not deployed")
    if code == "ModelError":
        original_status = error.response.get("OriginalStatusCode")
        original = error.response.get("OriginalMessage")
        if isinstance(original_status, int) and 400 <= original_status < 500:
            return ApiError(400, "invalid_inference_request", _triton_message(original))
        return ApiError(502, "inference_failed", "the model failed to answer")
    if code == "ValidationError":
        return ApiError(400, "invalid_inference_request", "the inference endpoint refused the request")
    return ApiError(502, "inference_failed", "inference failed")


def invoke_model(
    *,
    runtime,
    deployments: DeploymentCache,
    endpoint_name: str,
    model: str | None,
    access: ModelAccess,
    body: bytes,
    content_type: str | None,
    accept: str | None = None,
) -> InferenceResult:
    """Validate, authorize and invoke; raise ApiError with the HTTP status for every failure."""
    customer = check_model_id(model)
    group = deployments.model_package_group
    if not access.allows(group, customer):
        raise ApiError(403, "forbidden", f"this token may not invoke model {customer!r} of {group!r}")
    try:
        parsed = parse_content_type(content_type)
        body = validate_request(body, parsed)
    except InvalidRequest as error:
        raise ApiError(error.status, error.code, str(error)) from None

    deployment = deployments.get()
    for attempt in range(2):
        try:
            target = deployment.target(customer)
        except ModelNotDeployed:
            if attempt == 0:  # maybe deployed since the record was cached
                deployment = deployments.get(refresh=True)
                continue
            raise ApiError(404, "model_not_found", f"model {customer!r} is not deployed") from None
        arguments = {"EndpointName": endpoint_name, "TargetModel": target, "ContentType": parsed.header, "Body": body}
        if accept:
            arguments["Accept"] = accept
        try:
            response = runtime.invoke_endpoint(**arguments)
        except Exception as error:
            mapped = map_sagemaker_error(error)
            if mapped.status == 404 and attempt == 0:
                # The cached record may name a version the deploy step has just removed: re-read it once.
                refreshed = deployments.get(refresh=True)
                if refreshed.model_version != deployment.model_version:
                    deployment = refreshed
                    continue
            raise mapped from None
        return InferenceResult(
            body=response["Body"].read(),
            content_type=response.get("ContentType") or JSON,
            model_version=deployment.model_version,
        )
    raise ApiError(404, "model_not_found", f"model {customer!r} is not deployed")
