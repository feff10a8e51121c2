"""JWT verification against an OIDC issuer's JWKS: the one implementation behind every ModelGate check of a
bearer token (the inference API's authorizer and the approvers' sign-in).

- Only asymmetric algorithms are accepted (no `none`, no HS* key confusion), and the header's `alg` must match
  the key type published in the JWKS.
- `iss`, `aud`, `exp` are required and checked, `nbf`/`iat` honoured, with a small clock skew.
- JWKS keys are cached; an unknown `kid` triggers one refetch (key rotation), rate-limited so that a flood
  of tokens with random `kid`s cannot turn into a flood of JWKS downloads.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
MAX_TOKEN_BYTES = 8192  # real ID/access tokens are 1-3 KB; anything bigger is garbage or an attack


class TokenRejected(Exception):
    """The token is not acceptable. `reason` is a short machine-readable code safe to log (never the token)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class JwksUnavailable(Exception):
    """The issuer's JWKS could not be fetched or parsed: a server-side problem, not the caller's."""


@dataclass(frozen=True)
class JwtPolicy:
    issuer: str
    audience: str
    leeway_seconds: int = 60
    required_claims: tuple[str, ...] = ("exp", "iss", "aud", "sub")


def fetch_json(url: str, timeout: float = 3.0) -> dict:
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise JwksUnavailable(f"refusing to fetch keys over plain HTTP from {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            return json.loads(response.read(1_000_000))
    except (OSError, ValueError) as error:
        raise JwksUnavailable(f"could not fetch JWKS from {url}: {error}") from None


@dataclass
class JwksCache:
    """Signing keys of one issuer by `kid`, refreshed after `ttl_seconds` or when an unknown kid shows up."""

    url: str
    fetch: Callable[[str], Mapping[str, Any]] = fetch_json
    clock: Callable[[], float] = time.monotonic
    ttl_seconds: float = 3600.0
    min_refresh_interval_seconds: float = 30.0
    _keys: dict[str, PyJWK] = field(default_factory=dict, init=False)
    _fetched_at: float | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _refresh(self) -> None:
        document = self.fetch(self.url)
        try:
            key_set = PyJWKSet.from_dict(dict(document))
        except jwt.PyJWTError as error:
            raise JwksUnavailable(f"JWKS at {self.url} is not usable: {error}") from None
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id}
        self._fetched_at = self.clock()

    def key(self, kid: str) -> PyJWK:
        with self._lock:
            now = self.clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.ttl_seconds
            may_refetch = self._fetched_at is None or now - self._fetched_at >= self.min_refresh_interval_seconds
            if stale or (kid not in self._keys and may_refetch):
                self._refresh()
            if kid not in self._keys:
                raise TokenRejected("unknown_kid", f"no key {kid!r} in the issuer's JWKS")
            return self._keys[kid]


def verify(token: str, policy: JwtPolicy, keys: JwksCache) -> dict[str, Any]:
    """Return the token's claims, or raise TokenRejected saying why."""
    if not isinstance(token, str) or not token:
        raise TokenRejected("missing", "no bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("oversized", f"token is {len(token)} bytes; limit {MAX_TOKEN_BYTES}")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise TokenRejected("malformed", str(error)) from None
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise TokenRejected("algorithm", f"alg {algorithm!r} is not allowed")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("no_kid", "token header has no kid")
    key = keys.key(kid)
    if key.key_type != _KEY_TYPES[algorithm[:2]] or (key.algorithm_name and key.algorithm_name != algorithm):
        raise TokenRejected("algorithm", f"alg {algorithm} does not match the {key.key_type} key {kid!r}")
    try:
        return jwt.decode(
            token,
            key=key.key,
            algorithms=[algorithm],
            audience=policy.audience,
            issuer=policy.issuer,
            leeway=policy.leeway_seconds,
            options={"require": list(policy.required_claims), "verify_iat": True},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("expired", "token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("not_yet_valid", "token is not valid yet (nbf/iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("audience", "token is for another audience") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected("issuer", "token is from another issuer") from None
    except jwt.MissingRequiredClaimError as error:
        raise TokenRejected("missing_claim", str(error)) from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("signature", "signature does not verify") from None
    except jwt.PyJWTError as error:
        raise TokenRejected("invalid", str(error)) from None
