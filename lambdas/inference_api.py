"""Inference API of one environment (API Gateway REST, Lambda proxy, behind the JWT authorizer), every model.

POST /groups/{group}/models/{customer}/invoke   KServe v2 JSON or SageMaker Triton binary+json -> the answer of
                                                that customer's model of that model group (its own endpoint)
GET  /groups/{group}/health                     the group's deployed version and its endpoint's status
GET  /health                                    every served group's health (200 only if all are ok)
An unknown group is 404 naming the served ones. Errors are JSON `{"error": ..., "code": ...}` with the status of
modelgate.serving.invoke (never a stack trace).
"""

from __future__ import annotations

import base64
import json
from functools import cache

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from botocore.config import Config

from modelgate.serving.access import GROUP_HEALTH_ROUTE, HEALTH_ROUTE, INVOKE_ROUTE, ModelAccess
from modelgate.serving.invoke import ApiError, DeploymentCache, invoke_model
from modelgate.serving.settings import InferenceSettings, ServedModel, UnknownServedModel

logger = Logger(service="modelgate-inference-api")

# API Gateway gives up after 29 s; no retries here: throttling and loading are answered with Retry-After.
_RUNTIME_CONFIG = Config(connect_timeout=2, read_timeout=25, retries={"total_max_attempts": 1, "mode": "standard"})


@cache
def services() -> tuple[InferenceSettings, object, dict[str, DeploymentCache], object]:
    """Settings and clients, once per container: (settings, sagemaker-runtime, group -> its deployment cache,
    sagemaker)."""
    settings = InferenceSettings.from_environ()
    session = boto3.Session()
    s3 = session.client("s3")
    deployments = {
        model.group: DeploymentCache(s3, settings.bucket, model.group, ttl_seconds=settings.deployment_cache_seconds)
        for model in settings.models
    }
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


def invoke(event: APIGatewayProxyEvent, runtime, deployments: DeploymentCache, served: ServedModel) -> dict:
    raw = event.body or ""
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode()
    access = ModelAccess.from_context((event.request_context.authorizer.raw_event or {}).get("models"))
    customer = (event.path_parameters or {}).get("customer")
    logger.append_keys(model=customer)
    result = invoke_model(
        runtime=runtime,
        deployments=deployments,
        endpoint_name=served.endpoint_name,
        model=customer,
        access=access,
        body=body,
        content_type=event.headers.get("content-type"),
        accept=event.headers.get("accept"),
    )
    logger.info("invoked", extra={"model_version": result.model_version, "bytes": len(result.body)})
    return _response(200, result.body, result.content_type, {"X-Model-Version": str(result.model_version)})


def group_health(deployments: DeploymentCache, sagemaker, served: ServedModel) -> dict:
    """One group's serving state: its endpoint's status and the version its deployment record names."""
    try:
        deployment = deployments.get()
        version, customers = deployment.model_version, len(deployment.customers)
    except ApiError as error:  # nothing deployed yet, or an unreadable record: degraded, and why
        version, customers = None, 0
        logger.info("no deployment record", extra={"group": served.group, "code": error.code})
    status = sagemaker.describe_endpoint(EndpointName=served.endpoint_name)["EndpointStatus"]
    return {
        "status": "ok" if status == "InService" and version else "degraded",
        "model": served.model,
        "model_package_group": served.group,
        "endpoint_status": status,
        "model_version": version,
        "models": customers,
    }


def _health_response(body: dict) -> dict:
    return _response(200 if body["status"] == "ok" else 503, json.dumps(body).encode(), "application/json")


def health(settings: InferenceSettings, deployments: dict[str, DeploymentCache], sagemaker) -> dict:
    groups = {m.group: group_health(deployments[m.group], sagemaker, m) for m in settings.models}
    every = all(state["status"] == "ok" for state in groups.values())
    return _health_response({"status": "ok" if every else "degraded", "groups": groups})


def _served(settings: InferenceSettings, event: APIGatewayProxyEvent) -> ServedModel:
    try:
        return settings.served((event.path_parameters or {}).get("group"))
    except UnknownServedModel as unknown:
        raise ApiError(404, "unknown_model_group", str(unknown)) from None


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context: object) -> dict:
    settings, runtime, deployments, sagemaker = services()
    logger.append_keys(environment=settings.environment)
    request = APIGatewayProxyEvent(event)
    try:
        if request.resource == INVOKE_ROUTE and request.http_method == "POST":
            served = _served(settings, request)
            logger.append_keys(model_package_group=served.group)
            return invoke(request, runtime, deployments[served.group], served)
        if request.resource == GROUP_HEALTH_ROUTE and request.http_method == "GET":
            served = _served(settings, request)
            return _health_response(group_health(deployments[served.group], sagemaker, served))
        if request.resource == HEALTH_ROUTE and request.http_method == "GET":
            return health(settings, deployments, sagemaker)
        return _error(ApiError(404, "not_found", f"no route {request.http_method} {request.resource}"))
    except ApiError as error:
        logger.info("refused", extra={"status": error.status, "code": error.code})
        return _error(error)
    except Exception:
        logger.exception("unexpected failure")  # the trace goes to the log, never to the caller
        return _error(ApiError(500, "internal_error", f"internal error (request {context.aws_request_id})"))
