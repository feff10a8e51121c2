"""JWT verification against an OIDC issuer's JWKS: the one implementation behind every ModelGate check of a
bearer token (the inference API's authorizer and the approvers' sign-in).

- Only asymmetric algorithms are accepted (no `none`, no HS* key confusion), and the header's `alg` must match
  the key type published in the JWKS.
- `iss`, `aud`, `exp` are required and checked, `nbf`/`iat` honoured, with a small clock skew.
- JWKS keys are cached; an unknown `kid` triggers one refetch (key rotation), rate-limited so that a flood
  of tokens with random `kid`s cannot turn into a flood of JWKS downloads. A failed fetch is rate-limited too
  (negative caching with back-off), and keys already known keep verifying until their TTL while the issuer is down.
- Only keys published for signatures verify (RFC 7517 4.2 `use`, 4.3 `key_ops`).
- Tokens are read strictly: unpadded base64url segments in their one canonical spelling (RFC 7515 2), and
  NumericDate claims that are JSON numbers (RFC 7519 2).
- Keys are fetched over https; plain http only from a loopback host (the local stand-ins), by parsed URL.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import threading
import time
import urllib.parse
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


_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")  # empty: an unsigned JWS (refused later for its alg)
_NUMERIC_DATES = ("exp", "nbf", "iat")


def plain_http_refusal(url: str) -> str | None:
    """Why `url` may not be fetched (None: it may). https anywhere; http only to a loopback host: `localhost`
    or a loopback IP literal, parsed (so `localhost.attacker.example` and `localhost@attacker.example` are not)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme != "http":
        return f"{url} is not an https URL"
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback or parts.username is not None or parts.password is not None:
        return f"refusing plain HTTP to {url}: only a loopback host may be reached without TLS"
    return None


def fetch_json(url: str, timeout: float = 3.0) -> dict:
    refusal = plain_http_refusal(url)
    if refusal:
        raise JwksUnavailable(f"refusing to fetch keys: {refusal}")
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
    # After a failed fetch, wait this long before the next attempt, doubling per failure up to the maximum.
    failure_backoff_seconds: float = 5.0
    max_failure_backoff_seconds: float = 300.0
    _keys: dict[str, PyJWK] = field(default_factory=dict, init=False)
    _fetched_at: float | None = field(default=None, init=False)
    _failed_at: float | None = field(default=None, init=False)
    _failures: int = field(default=0, init=False)
    _failure: str = field(default="", init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _refresh(self) -> None:
        try:
            document = self.fetch(self.url)
            try:
                usable = [key for key in dict(document).get("keys") or [] if _verifies_signatures(key)]
                key_set = PyJWKSet.from_dict({**dict(document), "keys": usable}) if usable else None
            except (jwt.PyJWTError, TypeError, ValueError, AttributeError) as error:
                raise JwksUnavailable(f"JWKS at {self.url} is not usable: {error}") from None
        except JwksUnavailable as error:
            self._failed_at, self._failures, self._failure = self.clock(), self._failures + 1, str(error)
            raise
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id} if key_set else {}
        self._fetched_at, self._failed_at, self._failures = self.clock(), None, 0

    def _backing_off(self, now: float) -> bool:
        if self._failed_at is None:
            return False
        wait = min(self.failure_backoff_seconds * 2 ** (self._failures - 1), self.max_failure_backoff_seconds)
        return now - self._failed_at < max(wait, 0.0)

    def key(self, kid: str) -> PyJWK:
        with self._lock:
            now = self.clock()
            fresh = self._fetched_at is not None and now - self._fetched_at <= self.ttl_seconds
            may_refetch = self._fetched_at is None or now - self._fetched_at >= self.min_refresh_interval_seconds
            if not fresh or (kid not in self._keys and may_refetch):
                if self._backing_off(now):
                    if not fresh:  # nothing trustworthy to serve: fail fast with the last error
                        raise JwksUnavailable(f"{self._failure} (not retried yet: backing off)")
                else:
                    try:
                        self._refresh()
                    except JwksUnavailable:
                        if not fresh:
                            raise
                        # the known keys are still within their TTL: keep serving them
            if kid not in self._keys:
                raise TokenRejected("unknown_kid", f"no key {kid!r} in the issuer's JWKS")
            return self._keys[kid]


def _verifies_signatures(key: Any) -> bool:
    """RFC 7517 4.2/4.3: a key published for encryption (`use` other than "sig"), or whose `key_ops` do not
    include "verify", is never used to verify a signature."""
    if not isinstance(key, Mapping):
        return False
    if "use" in key and key["use"] != "sig":
        return False
    return "key_ops" not in key or (isinstance(key["key_ops"], list) and "verify" in key["key_ops"])


def _check_canonical(token: str) -> None:
    """RFC 7515 2 / 7519 7.2: three unpadded base64url segments, each the one canonical encoding of its bytes."""
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenRejected("malformed", "a JWT has three dot-separated segments")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise TokenRejected("malformed", "a JWT segment is not unpadded base64url")
        try:
            decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):
            raise TokenRejected("malformed", "a JWT segment is not base64url") from None
        if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != segment:
            raise TokenRejected("malformed", "a JWT segment is not in canonical base64url")


def verify(token: str, policy: JwtPolicy, keys: JwksCache) -> dict[str, Any]:
    """Return the token's claims, or raise TokenRejected saying why."""
    if not isinstance(token, str) or not token:
        raise TokenRejected("missing", "no bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("oversized", f"token is {len(token)} bytes; limit {MAX_TOKEN_BYTES}")
    _check_canonical(token)
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
        claims = jwt.decode(
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
    for name in _NUMERIC_DATES:  # RFC 7519 2: NumericDate is a JSON number (PyJWT would accept "123" too)
        if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], int | float)):
            raise TokenRejected("invalid", f"claim {name!r} is not a NumericDate (a JSON number)")
    return claims
