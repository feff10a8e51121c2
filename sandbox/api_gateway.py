"""A local stand-in for API Gateway (REST API, Lambda proxy integration) on loopback.

Turns real HTTP requests into the API Gateway v1 proxy events the deployed Lambdas receive, runs an optional
Lambda authorizer first (TOKEN or REQUEST type, same event and policy shapes as AWS), calls the real handler
and turns its proxy response back into HTTP. Tests, headless-browser tests and `make demo` use it so that the
handlers are exercised exactly as deployed.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.loopback_http import LoopbackHTTPServer

Handler = Callable[[dict, Any], dict]
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request limit
_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")


@dataclass
class LambdaContext:
    """What handlers (and Powertools) read from the Lambda context object."""

    function_name: str = "local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:eu-west-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass(frozen=True)
class Authorizer:
    handler: Handler
    kind: str = "TOKEN"  # TOKEN (Authorization header) or REQUEST (whole request)
    header: str = "Authorization"


@dataclass(frozen=True)
class Validation:
    """A method's RequestValidator with what it checks: the method's required request parameters
    (`querystring.token`, `header.Content-Type`, `path.model`) and its request models (content type -> JSON
    schema, draft 4 as in API Gateway)."""

    parameters: tuple[str, ...] = ()
    models: dict[str, dict] = field(default_factory=dict)
    validate_parameters: bool = True
    validate_body: bool = True

    def refusal(self, query: dict[str, list[str]], headers: dict[str, str], params: dict, body: bytes) -> str | None:
        """API Gateway's 400 message for a request this validator refuses, else None."""
        if self.validate_parameters:
            sources = {"querystring": {k: v[-1] for k, v in query.items()}, "header": headers, "path": params}
            missing = [
                name
                for where, _, name in (p.partition(".") for p in self.parameters)
                if not (sources[where].get(name.lower() if where == "header" else name) or "").strip()
            ]
            if missing:
                return f"Missing required request parameters: [{', '.join(missing)}]"
        if self.validate_body and self.models:
            media = (headers.get("content-type") or "application/json").split(";")[0].strip().lower()
            schema = self.models.get(media)
            if schema is not None:
                import jsonschema

                try:
                    jsonschema.Draft4Validator(schema).validate(json.loads(body or b"null"))
                except (ValueError, jsonschema.ValidationError):
                    return "Invalid request body"
        return None


@dataclass(frozen=True)
class Route:
    method: str
    resource: str  # API Gateway resource path, e.g. "/models/{model}/invoke"
    handler: Handler
    authorizer: Authorizer | None = None
    validation: Validation | None = None  # the method's RequestValidator, applied after the authorizer

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        pattern = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.resource) + "$"
        found = re.match(pattern, path)
        return found.groupdict() if found else None


class LocalApiGateway:
    """`with LocalApiGateway([Route(...), ...]) as api:` then call `api.url + "/path"`."""

    def __init__(self, routes: list[Route], stage: str = "prod") -> None:
        self.routes = routes
        self.stage = stage
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("API stand-in is not started (use it as a context manager)")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def method_arn(self, method: str, path: str) -> str:
        return f"arn:aws:execute-api:eu-west-1:000000000000:local/{self.stage}/{method}{path}"

    # -- event shaping (pure, so tests can call it without HTTP) ---------------------------------------------
    def event(self, method: str, raw_path: str, headers: dict[str, str], body: bytes, route: Route, params: dict):
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query, keep_blank_values=True)
        content_type = headers.get("content-type", "")
        is_text = not body or content_type.startswith(_TEXT_TYPES)
        return {
            "resource": route.resource,
            "path": parts.path,
            "httpMethod": method,
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": route.resource,
                "httpMethod": method,
                "path": f"/{self.stage}{parts.path}",
                "stage": self.stage,
                "requestId": str(uuid.uuid4()),
                "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("user-agent", "")},
            },
            "body": (body.decode() if is_text else base64.b64encode(body).decode()) if body else None,
            "isBase64Encoded": bool(body) and not is_text,
        }

    def _authorize(self, route: Route, event: dict) -> tuple[int, dict | None]:
        """Run the authorizer like API Gateway: 401 on 'Unauthorized', 403 on Deny, else its context."""
        auth = route.authorizer
        method_arn = self.method_arn(event["httpMethod"], event["path"])
        if auth.kind == "TOKEN":
            token = {k.lower(): v for k, v in event["headers"].items()}.get(auth.header.lower())
            if not token:
                return 401, None
            auth_event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
        else:
            auth_event = {**event, "type": "REQUEST", "methodArn": method_arn}
        try:
            policy = auth.handler(auth_event, LambdaContext(function_name="authorizer"))
        except Exception as error:  # API Gateway turns the authorizer's "Unauthorized" error into a 401
            message = getattr(error, "error_message", str(error))  # a LocalFunction's error: Lambda's errorMessage
            return (401, None) if message == "Unauthorized" else (500, None)
        statements = policy.get("policyDocument", {}).get("Statement", [])
        allowed = any(s.get("Effect") == "Allow" and _arn_matches(s.get("Resource"), method_arn) for s in statements)
        denied = any(s.get("Effect") == "Deny" and _arn_matches(s.get("Resource"), method_arn) for s in statements)
        if denied or not allowed:
            return 403, None
        return 200, {**policy.get("context", {}), "principalId": policy.get("principalId")}

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        path = urlsplit(raw_path).path
        for route in self.routes:
            params = route.match(method, path)
            if params is None:
                continue
            if len(body) > MAX_PAYLOAD_BYTES:
                return _json(413, {"message": "Request Too Long"})
            event = self.event(method, raw_path, headers, body, route, params)
            if route.authorizer is not None:
                status, context = self._authorize(route, event)
                if status == 401:
                    return _json(401, {"message": "Unauthorized"})
                if status == 403:
                    return _json(403, {"message": "User is not authorized to access this resource"})
                if status != 200:
                    return _json(500, {"message": None})
                event["requestContext"]["authorizer"] = context
            if route.validation is not None:
                query = parse_qs(urlsplit(raw_path).query, keep_blank_values=True)
                refusal = route.validation.refusal(query, headers, params, body)
                if refusal is not None:
                    return _json(400, {"message": refusal})
            response = route.handler(event, LambdaContext(function_name=route.resource))
            return _from_proxy(response)
        allowed = [r.method for r in self.routes if r.match(r.method, path) is not None]
        if allowed:
            return _json(405, {"message": "Method Not Allowed"})
        return _json(403, {"message": "Missing Authentication Token"})  # what API Gateway says for unknown paths

    def __enter__(self) -> LocalApiGateway:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, out_headers, payload = gateway.dispatch(self.command, self.path, headers, body)
                self.send_response(status)
                for name, value in out_headers.items():
                    for item in value if isinstance(value, list) else [value]:
                        self.send_header(name, item)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self._server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="local-api-gateway", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _arn_matches(resource: str | list[str] | None, arn: str) -> bool:
    resources = resource if isinstance(resource, list) else [resource or ""]
    return any(re.fullmatch(re.escape(r).replace(r"\*", ".*"), arn) for r in resources)


def _json(status: int, body: dict) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _from_proxy(response: dict) -> tuple[int, dict, bytes]:
    if not isinstance(response, dict) or "statusCode" not in response:
        return _json(502, {"message": "Internal server error"})  # API Gateway: malformed Lambda proxy response
    headers: dict[str, Any] = dict(response.get("headers") or {})
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name] = values
    body = response.get("body") or ""
    payload = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
    return int(response["statusCode"]), headers, payload
