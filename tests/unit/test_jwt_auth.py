"""modelgate.jwt_auth: key caching and rotation. (The bad-token catalogue is tested at the authorizer.)"""

from __future__ import annotations

import pytest

from modelgate.jwt_auth import JwksCache, JwksUnavailable, JwtPolicy, TokenRejected, verify
from sandbox.oidc_issuer import LocalIssuer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer():
    with LocalIssuer(audience="api") as running:
        yield running


def test_valid_token_returns_claims_and_keys_are_fetched_once(issuer):
    keys = JwksCache(issuer.jwks_url)
    policy = JwtPolicy(issuer=issuer.issuer, audience="api")
    for _ in range(5):
        claims = verify(issuer.mint(subject="app-1", scope="models:read"), policy, keys)
    assert claims["sub"] == "app-1"
    assert claims["scope"] == "models:read"
    assert issuer.jwks_requests == 1


def test_key_rotation_is_picked_up_on_unknown_kid(issuer):
    clock = Clock()
    keys = JwksCache(issuer.jwks_url, clock=clock)
    policy = JwtPolicy(issuer=issuer.issuer, audience="api")
    verify(issuer.mint(), policy, keys)
    issuer.rotate()
    clock.now += 31  # past the minimum refresh interval
    assert verify(issuer.mint(subject="after-rotation"), policy, keys)["sub"] == "after-rotation"
    assert issuer.jwks_requests == 2


def test_unknown_kids_cannot_force_a_refetch_per_request(issuer):
    clock = Clock()
    keys = JwksCache(issuer.jwks_url, clock=clock)
    policy = JwtPolicy(issuer=issuer.issuer, audience="api")
    verify(issuer.mint(), policy, keys)
    forged = LocalIssuer(audience="api")  # same claims, a key the real issuer never published
    forged._server = issuer._server  # so its iss matches
    for _ in range(20):
        with pytest.raises(TokenRejected) as caught:
            verify(forged.mint(), policy, keys)
        assert caught.value.reason == "unknown_kid"
    assert issuer.jwks_requests == 1, "within the refresh interval an unknown kid must not refetch"


def test_jwks_outage_is_a_server_error_not_a_rejection():
    keys = JwksCache("http://127.0.0.1:9/.well-known/jwks.json")
    with pytest.raises(JwksUnavailable):
        keys.key("any")


def test_plain_http_jwks_urls_off_loopback_are_refused():
    with pytest.raises(JwksUnavailable, match="plain HTTP"):
        JwksCache("http://issuer.example.com/keys").key("any")
