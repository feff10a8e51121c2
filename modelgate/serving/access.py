"""Which models a verified caller may invoke, and the API Gateway policy and context that say so.

Scopes (OAuth 2.0 `scope`, space-separated, or `scp`, a list, as Okta / Entra ID / Salesforce connected apps
issue them):
    inference:invoke                    every model of the environment, of every model group
    inference:invoke:<customer>         one customer's models: that customer id in every model group the API
                                        serves (the customer is the tenant)
    inference:invoke:<group>/*          every customer's model of one model group
    inference:invoke:<group>/<customer> one customer's model of one model group
A valid token without any of these is denied (403), an invalid token is unauthorized (401); a scope naming no
valid customer or group grants nothing.

The authorizer's policy lists exactly the allowed routes, so API Gateway itself refuses the others (its cached
policy is reused for the same token on every route); the invoke Lambda checks the context again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelgate.model_repository import CUSTOMER_ID

# The inference API's resources (infra/constructs/inference_api.py builds them, lambdas/inference_api.py routes
# on them).
INVOKE_ROUTE = "/groups/{group}/models/{customer}/invoke"
GROUP_HEALTH_ROUTE = "/groups/{group}/health"
HEALTH_ROUTE = "/health"

SCOPE_ALL = "inference:invoke"
SCOPE_PREFIX = "inference:invoke:"
ALL_MODELS = "*"
MAX_MODELS_PER_TOKEN = 100  # an IAM policy document returned by an authorizer must stay small
_GROUP = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's model package group names


def _grant(value: str) -> str | None:
    """`<customer>`, `<group>/*` or `<group>/<customer>` if well-formed, else None (it grants nothing)."""
    group, slash, customer = value.partition("/")
    if not slash:
        return value if CUSTOMER_ID.match(value) else None
    if _GROUP.match(group) and (customer == ALL_MODELS or CUSTOMER_ID.match(customer)):
        return value
    return None


class ScopeError(ValueError):
    """The token's scope claims are malformed (the token is refused)."""


@dataclass(frozen=True)
class ModelAccess:
    all_models: bool
    models: frozenset[str]  # grants: `<customer>` (in every group), `<group>/*`, `<group>/<customer>`

    def allows(self, group: str, customer: str) -> bool:
        grants = (customer, f"{group}/{ALL_MODELS}", f"{group}/{customer}")
        return self.all_models or any(grant in self.models for grant in grants)

    @property
    def empty(self) -> bool:
        return not self.all_models and not self.models

    def to_context(self) -> str:
        """Authorizer context values must be strings: '*' or the grants, space-separated."""
        return ALL_MODELS if self.all_models else " ".join(sorted(self.models))

    @classmethod
    def from_context(cls, value: Any) -> ModelAccess:
        if not isinstance(value, str):
            return cls(False, frozenset())
        if value == ALL_MODELS:
            return cls(True, frozenset())
        return cls(False, frozenset(part for part in value.split() if _grant(part)))


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    scopes: list[str] = []
    scope, scp = claims.get("scope"), claims.get("scp")
    if scope is not None:
        if not isinstance(scope, str):
            raise ScopeError("claim 'scope' must be a space-separated string")
        scopes += scope.split()
    if scp is not None:
        if isinstance(scp, str):
            scopes += scp.split()
        elif isinstance(scp, list) and all(isinstance(item, str) for item in scp):
            scopes += scp
        else:
            raise ScopeError("claim 'scp' must be a list of strings")
    return scopes


def model_access(claims: Mapping[str, Any]) -> ModelAccess:
    models: set[str] = set()
    everything = False
    for scope in _scopes(claims):
        if scope == SCOPE_ALL:
            everything = True
        elif scope.startswith(SCOPE_PREFIX) and (grant := _grant(scope[len(SCOPE_PREFIX) :])):
            models.add(grant)
    if not everything and len(models) > MAX_MODELS_PER_TOKEN:
        raise ScopeError(f"token names {len(models)} models; at most {MAX_MODELS_PER_TOKEN} (or {SCOPE_ALL})")
    return ModelAccess(everything, frozenset(models))


def _grants(access: ModelAccess) -> list[str]:
    return [f"{ALL_MODELS}/{ALL_MODELS}"] if access.all_models else sorted(access.models)


def _route(grant: str) -> str:
    """`acme` -> `*/models/acme`, `g/*` -> `g/models/*`, `g/acme` -> `g/models/acme` (under /groups/)."""
    group, slash, customer = grant.partition("/")
    return f"{group}/models/{customer}" if slash else f"{ALL_MODELS}/models/{group}"


def _api_prefix(method_arn: str) -> str:
    """arn:aws:execute-api:<region>:<account>:<api id>/<stage>/<METHOD>/<path> -> everything up to the stage."""
    parts = method_arn.split("/", 2)
    if len(parts) < 3 or not parts[0].startswith("arn:") or ":execute-api:" not in parts[0]:
        raise ValueError(f"not an API Gateway method ARN: {method_arn!r}")
    return f"{parts[0]}/{parts[1]}"


def authorizer_response(
    method_arn: str, principal: str, access: ModelAccess, claims: Mapping[str, Any], usage_key: str | None = None
) -> dict:
    """Allow the health routes and POST /groups/*/models/<m>/invoke for the allowed models; deny all if none.

    `usage_key`: the API key whose usage plan meters and throttles JWT callers (API key source AUTHORIZER)."""
    prefix = _api_prefix(method_arn)
    if access.empty:
        statement = {"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": f"{prefix}/*"}
    else:
        health = [f"{prefix}/GET/health", f"{prefix}/GET/groups/*/health"]
        resources = health + [f"{prefix}/POST/groups/{_route(grant)}/invoke" for grant in _grants(access)]
        statement = {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": resources}
    response = {
        "principalId": principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "context": {
            "models": access.to_context(),
            "subject": principal,
            "client": str(claims.get("azp") or claims.get("client_id") or ""),
        },
    }
    if usage_key:
        response["usageIdentifierKey"] = usage_key
    return response
