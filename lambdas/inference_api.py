"""Inference API (API Gateway REST, Lambda proxy, behind the JWT authorizer).

POST /models/{model}/invoke   body: KServe v2 JSON or SageMaker Triton binary+json -> the model's answer
GET  /health                  the deployed model version and the endpoint's status
Errors are JSON `{"error": ..., "code": ...}` with the status of modelgate.serving.invoke (never a stack trace).
"""

from __future__ import annotations

import base64
import json
from functools import cache

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from botocore.config import Config

from modelgate.serving.access import ModelAccess
from modelgate.serving.invoke import ApiError, DeploymentCache, invoke_model
from modelgate.serving.settings import InferenceSettings

logger = Logger(service="modelgate-inference-api")
# API Gateway gives up after 29 s; no retries here: throttling and loading are answered with Retry-After.
_RUNTIME_CONFIG = Config(connect_timeout=2, read_timeout=25, retries={"total_max_attempts": 1, "mode": "standard"})


@cache
def services() -> tuple[InferenceSettings, object, DeploymentCache, object]:
    """Settings and clients, once per container: (settings, sagemaker-runtime, deployment cache, sagemaker)."""
    settings = InferenceSettings.from_environ()
    session = boto3.Session()
    deployments = DeploymentCache(session.client("s3"), settings.bucket, ttl_seconds=settings.deployment_cache_seconds)
    runtime = session.client("sagemaker-runtime", config=_RUNTIME_CONFIG)
    return settings, runtime, deployments, session.client("sagemaker", config=_RUNTIME_CONFIG)


def _response(status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> dict:
    binary = not content_type.startswith("application/json")
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_type, "Cache-Control": "no-store", **(headers or {})},
        "body": base64.b64encode(body).decode() if binary else body.decode(),
        "isBase64Encoded": binary,
    }


def _error(error: ApiError) -> dict:
    return _response(error.status, error.body(), "application/json", error.headers())


def invoke(event: APIGatewayProxyEvent, runtime, deployments: DeploymentCache, endpoint: str) -> dict:
    raw = event.body or ""
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode()
    access = ModelAccess.from_context((event.request_context.authorizer.raw_event or {}).get("models"))
    model = (event.path_parameters or {}).get("model")
    logger.append_keys(model=model)
    result = invoke_model(
        runtime=runtime,
        deployments=deployments,
        endpoint_name=endpoint,
        model=model,
        access=access,
        body=body,
        content_type=event.headers.get("content-type"),
        accept=event.headers.get("accept"),
    )
    logger.info("invoked", extra={"model_version": result.model_version, "bytes": len(result.body)})
    return _response(200, result.body, result.content_type, {"X-Model-Version": str(result.model_version)})


def health(deployments: DeploymentCache, sagemaker, endpoint: str) -> dict:
    deployment = deployments.get()
    status = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"]
    body = {
        "status": "ok" if status == "InService" and deployment.model_version else "degraded",
        "endpoint_status": status,
        "model_version": deployment.model_version,
        "models": len(deployment.customers),
    }
    return _response(200 if body["status"] == "ok" else 503, json.dumps(body).encode(), "application/json")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context: object) -> dict:
    settings, runtime, deployments, sagemaker = services()
    logger.append_keys(environment=settings.environment)
    request = APIGatewayProxyEvent(event)
    try:
        if request.resource == "/models/{model}/invoke" and request.http_method == "POST":
            return invoke(request, runtime, deployments, settings.endpoint_name)
        if request.resource == "/health" and request.http_method == "GET":
            return health(deployments, sagemaker, settings.endpoint_name)
        return _error(ApiError(404, "not_found", f"no route {request.http_method} {request.resource}"))
    except ApiError as error:
        logger.info("refused", extra={"status": error.status, "code": error.code})
        return _error(error)
    except Exception:
        logger.exception("unexpected failure")  # the trace goes to the log, never to the caller
        return _error(ApiError(500, "internal_error", f"internal error (request {context.aws_request_id})"))
