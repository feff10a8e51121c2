"""JWT authorizer of the inference API (API Gateway TOKEN authorizer, `Authorization: Bearer <jwt>`).

Invalid token -> "Unauthorized" (API Gateway answers 401); valid token -> a policy allowing GET /health and
exactly the models its scopes name (none: an explicit Deny, 403). The issuer's JWKS is cached for the life of
the container and refetched when a token names an unknown key id (rotation), at most every 30 s.
"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger

from modelgate.jwt_auth import JwksCache, JwtPolicy, TokenRejected, verify
from modelgate.serving.access import ScopeError, authorizer_response, model_access
from modelgate.serving.settings import AuthorizerSettings

logger = Logger(service="modelgate-inference-authorizer")


@cache
def verifier() -> tuple[JwtPolicy, JwksCache]:
    settings = AuthorizerSettings.from_environ()
    return JwtPolicy(issuer=settings.issuer, audience=settings.audience), JwksCache(settings.jwks_url)


def authorize(event: dict, policy: JwtPolicy, keys: JwksCache) -> dict:
    """The authorizer's answer; raises Exception("Unauthorized") (API Gateway's 401) for any bad token."""
    header = event.get("authorizationToken") if isinstance(event, dict) else None
    scheme, _, token = (header or "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise TokenRejected("missing", "expected 'Authorization: Bearer <token>'")
        claims = verify(token.strip(), policy, keys)
        access = model_access(claims)
        return authorizer_response(event["methodArn"], str(claims["sub"]), access, claims)
    except (TokenRejected, ScopeError) as rejected:
        # The reason code is safe to log; the token never is.
        logger.info("token rejected", extra={"reason": getattr(rejected, "reason", "scope")})
        raise Exception("Unauthorized") from None  # the exact error API Gateway maps to 401


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context: object) -> dict:
    policy, keys = verifier()
    return authorize(event, policy, keys)
