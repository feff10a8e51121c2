"""Cost of the inference API's JWT authorizer per request (warm: JWKS cached), against a bare HMAC check.

The authorizer path is the real one (`lambdas.inference_authorizer.authorize`: RS256 signature, iss/aud/exp/nbf,
scopes -> the API Gateway policy); the baseline is `hmac.compare_digest` of an HMAC-SHA256 over the same token,
the cheapest check a shared-secret scheme could do. API Gateway caches the authorizer's answer per token for 60 s,
so this cost is paid once per token and minute, not per request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from bench.common import BenchResult, interleaved, median

TARGET = 200.0  # RSA-2048 verification + JSON + claims checks vs one HMAC-SHA256
METHOD_ARN = "arn:aws:execute-api:eu-west-1:222222222222:abc123/v1/POST/models/acme/invoke"


def _per_call(call, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls


def run(quick: bool = False) -> BenchResult:
    from lambdas.inference_authorizer import authorize
    from modelgate.jwt_auth import JwksCache, JwtPolicy
    from sandbox.oidc_issuer import LocalIssuer

    calls, runs = (500, 5) if quick else (2000, 9)
    with LocalIssuer() as issuer:
        policy = JwtPolicy(issuer=issuer.issuer, audience=issuer.audience)
        keys = JwksCache(issuer.jwks_url)
        token = issuer.mint(ttl_seconds=3600, scope="inference:invoke:acme inference:invoke:globex")
        event = {"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": METHOD_ARN}
        assert authorize(event, policy, keys)["policyDocument"]["Statement"][0]["Effect"] == "Allow"  # warm
        fetches = issuer.jwks_requests

        secret = os.urandom(32)
        message = token.encode()
        expected = hmac.new(secret, message, hashlib.sha256).digest()

        def jwt_authorizer() -> None:
            authorize(event, policy, keys)

        def bare_hmac() -> None:
            if not hmac.compare_digest(hmac.new(secret, message, hashlib.sha256).digest(), expected):
                raise AssertionError("HMAC mismatch")

        samples = interleaved(
            runs, authorizer=lambda: _per_call(jwt_authorizer, calls), hmac=lambda: _per_call(bare_hmac, calls)
        )
        assert issuer.jwks_requests == fetches, "warm: no JWKS fetch during the measurement"
    ratio = median(samples["authorizer"]) / median(samples["hmac"])
    return BenchResult(
        name="Authorizer: JWT verification per request (warm JWKS) vs a bare HMAC",
        ratio_label="JWT authorizer / HMAC-SHA256 compare (median time per request)",
        ratio=ratio,
        target=f"<= {TARGET:.0f}",
        met=ratio <= TARGET,
        rows=[
            ("runs x calls (interleaved)", f"{runs} x {calls}"),
            ("token", f"RS256, 2048-bit key, {len(token)} bytes"),
            ("JWT authorizer (verify + scopes + policy), median", f"{median(samples['authorizer']) * 1e6:.1f} µs"),
            ("HMAC-SHA256 + compare_digest, median", f"{median(samples['hmac']) * 1e6:.2f} µs"),
            ("JWKS fetches during the measurement", "0"),
        ],
        notes="API Gateway caches an authorizer answer per token for 60 s (AUTHORIZER_CACHE_SECONDS), so the "
        "verification is paid once per token and minute, not per request.",
    )
