"""Approval links: signed, expiring, single-use tokens bound to (model package group, model package, environment,
action, recipient).

This module owns the token format; everything else imports it. A token is `sealed.seal("link", claims)`:
tampering with any claim breaks the KMS MAC. Expiry, environment and action are checked here; single use is
enforced where the decision is recorded (modelgate.approval.state: a conditional write on the token id).
Whether this environment serves the link's group is checked by the decision (modelgate.approval.decisions), which
has the settings. Format 2 added the group claim (`grp`); format-1 links are refused as malformed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from modelgate.approval.sealed import MacSigner, SealBroken, peek, seal, unseal

APPROVE = "approve"
REJECT = "reject"
ACTIONS = (APPROVE, REJECT)
PURPOSE = "link"
TOKEN_FORMAT = 2


class LinkRefused(Exception):
    """A link that must not be acted on. `reason` is a stable code for pages, logs and tests."""

    def __init__(self, reason: str, message: str, claims: LinkClaims | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.claims = claims


@dataclass(frozen=True)
class LinkClaims:
    token_id: str
    request_id: str
    model_package_group: str  # the group as configured (the ARN spells it in lower case)
    model_package_arn: str
    environment: str
    action: str
    recipient: str
    issued_at: int  # epoch seconds
    expires_at: int

    def to_payload(self) -> dict:
        return {
            "v": TOKEN_FORMAT,
            "jti": self.token_id,
            "rid": self.request_id,
            "grp": self.model_package_group,
            "arn": self.model_package_arn,
            "env": self.environment,
            "act": self.action,
            "to": self.recipient,
            "iat": self.issued_at,
            "exp": self.expires_at,
        }

    @property
    def version(self) -> int:
        """The version number the link's package ARN names (0 if it names none: such a link is refused later)."""
        tail = self.model_package_arn.rsplit("/", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    @classmethod
    def from_payload(cls, payload: dict) -> LinkClaims:
        fields = ("jti", "rid", "grp", "arn", "env", "act", "to", "iat", "exp")
        if payload.get("v") != TOKEN_FORMAT or any(name not in payload for name in fields):
            raise LinkRefused("malformed", "This link is not a valid ModelGate approval link.")
        claims = cls(
            token_id=str(payload["jti"]),
            request_id=str(payload["rid"]),
            model_package_group=str(payload["grp"]),
            model_package_arn=str(payload["arn"]),
            environment=str(payload["env"]),
            action=str(payload["act"]),
            recipient=str(payload["to"]),
            issued_at=int(payload["iat"]),
            expires_at=int(payload["exp"]),
        )
        if claims.action not in ACTIONS or not claims.environment or not claims.model_package_group:
            raise LinkRefused("malformed", "This link is not a valid ModelGate approval link.")
        return claims


def issue(
    signer: MacSigner,
    *,
    request_id: str,
    model_package_group: str,
    model_package_arn: str,
    environment: str,
    action: str,
    recipient: str,
    now: int,
    ttl_seconds: int,
) -> tuple[str, LinkClaims]:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")
    claims = LinkClaims(
        token_id=secrets.token_urlsafe(16),
        request_id=request_id,
        model_package_group=model_package_group,
        model_package_arn=model_package_arn,
        environment=environment,
        action=action,
        recipient=recipient,
        issued_at=now,
        expires_at=now + ttl_seconds,
    )
    return seal(PURPOSE, claims.to_payload(), signer), claims


def read(token: str, signer: MacSigner, *, now: int, environment: str, action: str) -> LinkClaims:
    """Claims of a link presented to `environment`'s approval service for `action`, or LinkRefused."""
    try:
        claims = LinkClaims.from_payload(unseal(PURPOSE, token, signer))
    except SealBroken:
        raise LinkRefused(
            "forged", "This link is not valid: it was altered, truncated, or not issued by ModelGate."
        ) from None
    except (TypeError, ValueError):
        raise LinkRefused("malformed", "This link is not a valid ModelGate approval link.") from None
    if now >= claims.expires_at:
        raise LinkRefused("expired", "This link has expired.", claims)
    if claims.environment != environment:
        raise LinkRefused(
            "wrong_environment",
            f"This link decides for the {claims.environment} environment; this is the {environment} approval service.",
            claims,
        )
    if claims.action != action:
        raise LinkRefused(
            "wrong_action", f"This link is for '{claims.action}', not '{action}'. Use the link from the e-mail.", claims
        )
    return claims


def unverified_environment(token: str, chain: Iterable[str]) -> str | None:
    """The environment of `chain` a token CLAIMS to be for, without verifying it: only to word a refusal (a name
    outside the chain is never echoed)."""
    environment = peek(token).get("env")
    return environment if isinstance(environment, str) and environment in tuple(chain) else None
