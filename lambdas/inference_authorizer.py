"""JWT authorizer of the inference API (API Gateway TOKEN authorizer, `Authorization: Bearer <jwt>`).

Invalid token -> "Unauthorized" (API Gateway answers 401); valid token -> a policy allowing GET /health and
exactly the models its scopes name (none: an explicit Deny, 403), with the usage plan's API key (API key
source AUTHORIZER: callers send only their JWT). The issuer's JWKS is cached for the life of the container and
refetched when a token names an unknown key id (rotation), at most every 30 s.
"""

from __future__ import annotations

from functools import cache

import boto3
from aws_lambda_powertools import Logger

from modelgate.jwt_auth import JwksCache, JwtPolicy, TokenRejected, verify
from modelgate.serving.access import ScopeError, authorizer_response, model_access
from modelgate.serving.settings import AuthorizerSettings

logger = Logger(service="modelgate-inference-authorizer")


@cache
def verifier() -> tuple[JwtPolicy, JwksCache, str | None]:
    settings = AuthorizerSettings.from_environ()
    usage_key = None
    if settings.usage_plan_key_id:  # read once per container: the key's value is generated at deploy time
        usage_key = boto3.client("apigateway").get_api_key(apiKey=settings.usage_plan_key_id, includeValue=True)
        usage_key = usage_key["value"]
    return JwtPolicy(issuer=settings.issuer, audience=settings.audience), JwksCache(settings.jwks_url), usage_key


def authorize(event: dict, policy: JwtPolicy, keys: JwksCache, usage_key: str | None = None) -> dict:
    """The authorizer's answer; raises Exception("Unauthorized") (API Gateway's 401) for any bad token."""
    header = event.get("authorizationToken") if isinstance(event, dict) else None
    scheme, _, token = (header or "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise TokenRejected("missing", "expected 'Authorization: Bearer <token>'")
        claims = verify(token.strip(), policy, keys)
        access = model_access(claims)
        return authorizer_response(event["methodArn"], str(claims["sub"]), access, claims, usage_key)
    except (TokenRejected, ScopeError) as rejected:
        # The reason code is safe to log; the token never is.
        logger.info("token rejected", extra={"reason": getattr(rejected, "reason", "scope")})
        raise Exception("Unauthorized") from None  # the exact error API Gateway maps to 401


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context: object) -> dict:
    policy, keys, usage_key = verifier()
    return authorize(event, policy, keys, usage_key)
