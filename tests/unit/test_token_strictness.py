"""Tokens are read strictly: one canonical spelling, keys used only as their publisher allows, no fetch off-host.

Each test names the rule it enforces."""

from __future__ import annotations

import json

import jwt
import pytest

from modelgate.approval.sealed import SealBroken, seal, unseal
from modelgate.jwt_auth import JwksCache, JwksUnavailable, JwtPolicy, TokenRejected, fetch_json, verify
from sandbox.oidc_issuer import LocalIssuer
from tests.unit.test_approval_logic import LocalHmac
from tests.unit.test_jwt_auth import Clock


@pytest.fixture
def issuer():
    with LocalIssuer(audience="api") as running:
        yield running


def policy(issuer) -> JwtPolicy:
    return JwtPolicy(issuer=issuer.issuer, audience="api")


# -- link / cookie MACs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, mac: f"{body}.{mac}!!",
        lambda body, mac: f"{body}.{mac}====",
        lambda body, mac: f"{body}.{mac}=",
        lambda body, mac: f"{body}!!.{mac}",
        lambda body, mac: f"{body}.{mac.replace('-', '+').replace('_', '/')}",
        lambda body, mac: f"{body} .{mac}",
    ],
)
def test_rfc_4648_5_links_decode_only_canonical_unpadded_base64url(tamper):
    """RFC 4648 5 (base64url), 3.3 and 3.5: characters outside the alphabet, padding and non-canonical
    encodings are errors, not silently dropped."""
    signer = LocalHmac()
    token = seal("link", {"jti": "t1", "act": "approve"}, signer)
    assert unseal("link", token, signer)["jti"] == "t1"
    body, mac = token.split(".")
    mac = mac if ("-" in mac or "_" in mac) else mac[:-1] + "-"  # make the standard-alphabet swap visible
    with pytest.raises(SealBroken):
        unseal("link", tamper(body, mac), signer)


def test_rfc_4648_3_5_a_mac_with_nonzero_trailing_bits_is_refused():
    signer = LocalHmac()
    body, mac = seal("link", {"jti": "t2"}, signer).split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(mac[-1])
    sibling = alphabet[last ^ 1]  # 32 bytes -> 43 chars: the last char carries 2 unused bits
    with pytest.raises(SealBroken):
        unseal("link", f"{body}.{mac[:-1]}{sibling}", signer)


# -- JWTs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["==", "=", "!!", " "])
def test_rfc_7515_2_a_jwt_segment_must_be_unpadded_base64url(issuer, suffix):
    """RFC 7515 2 / 7519 7.2: each JWS segment is BASE64URL without padding; anything else is malformed."""
    keys = JwksCache(issuer.jwks_url)
    token = issuer.mint()
    verify(token, policy(issuer), keys)
    with pytest.raises(TokenRejected) as caught:
        verify(token + suffix, policy(issuer), keys)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_rfc_7519_2_numeric_dates_are_json_numbers(issuer, claim):
    """RFC 7519 2 NumericDate: a JSON number. `"exp": "2111465412"` (a string) or a boolean is refused."""
    keys = JwksCache(issuer.jwks_url)
    for bad in ("2111465412", True):
        token = jwt.encode(
            {**jwt.decode(issuer.mint(), options={"verify_signature": False}), claim: bad},
            issuer.private_key,
            algorithm="RS256",
            headers={"kid": issuer.kid},
        )
        with pytest.raises(TokenRejected):
            verify(token, policy(issuer), keys)


# -- JWKS ------------------------------------------------------------------------------------------------------
def _document(issuer, **changes) -> dict:
    (key,) = issuer.jwks()["keys"]
    key = {name: value for name, value in {**key, **changes}.items() if value is not None}
    return {"keys": [key]}


@pytest.mark.parametrize(
    "changes",
    [{"use": "enc"}, {"use": None, "key_ops": ["encrypt"]}, {"key_ops": ["sign"]}, {"use": None, "key_ops": []}],
)
def test_rfc_7517_4_2_and_4_3_a_key_not_meant_for_verifying_never_verifies(issuer, changes):
    """RFC 7517 4.2 (`use` "enc" is for encryption) and 4.3 (`key_ops` without "verify"): such a key never verifies."""
    keys = JwksCache(issuer.jwks_url, fetch=lambda url: _document(issuer, **changes))
    with pytest.raises(TokenRejected) as caught:
        verify(issuer.mint(), policy(issuer), keys)
    assert caught.value.reason == "unknown_kid"
    ok = JwksCache(issuer.jwks_url, fetch=lambda url: _document(issuer, use="sig", key_ops=["verify"]))
    assert verify(issuer.mint(subject="fine"), policy(issuer), ok)["sub"] == "fine"


def test_a_failing_jwks_is_not_refetched_for_every_token_and_known_keys_keep_serving(issuer):
    """Back-off: while the issuer's JWKS fails, a flood of random kids makes no more than one fetch per interval,
    and tokens signed with keys already known keep verifying until those keys' TTL."""
    clock, calls, down = Clock(), [], {"now": False}

    def fetch(url):
        calls.append(clock.now)
        if down["now"]:
            raise JwksUnavailable("HTTP 500")
        return issuer.jwks()

    keys = JwksCache(issuer.jwks_url, fetch=fetch, clock=clock, ttl_seconds=3600)
    verify(issuer.mint(), policy(issuer), keys)
    down["now"] = True
    forged = LocalIssuer(audience="api")
    forged._server = issuer._server
    for _ in range(100):
        clock.now += 0.1  # 100 tokens in 10 s
        with pytest.raises(TokenRejected):
            verify(forged.mint(), policy(issuer), keys)
        assert verify(issuer.mint(subject="known"), policy(issuer), keys)["sub"] == "known"
    assert len(calls) <= 2, calls


def test_a_jwks_that_never_answered_fails_fast_after_the_first_attempt():
    clock, calls = Clock(), []

    def fetch(url):
        calls.append(clock.now)
        raise JwksUnavailable("HTTP 500")

    keys = JwksCache("https://issuer.example/jwks", fetch=fetch, clock=clock)
    for _ in range(50):
        clock.now += 0.2
        with pytest.raises(JwksUnavailable):
            keys.key("any")
    assert len(calls) <= 2, calls


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost.attacker.example/jwks",
        "http://127.0.0.1.attacker.example/jwks",
        "http://localhost@attacker.example/jwks",
        "http://127.0.0.1@attacker.example/jwks",
        "http://attacker.example/127.0.0.1",
        "ftp://127.0.0.1/jwks",
    ],
)
def test_plain_http_is_allowed_only_to_a_loopback_host(url, monkeypatch):
    """Keys come over TLS; the only plain-HTTP exemption is a loopback host (the local stand-ins), by parsed URL."""
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError(f"fetched {url}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(JwksUnavailable, match=r"plain HTTP|not an https"):
        fetch_json(url)
    from modelgate.approval.signin import SignInFailed, post_form

    with pytest.raises(SignInFailed, match=r"plain HTTP|not an https"):
        post_form(url, {})


def test_loopback_http_still_works_for_the_local_stand_ins(issuer):
    assert json.dumps(fetch_json(issuer.jwks_url))


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": ["modelgate-approval", "other-app"], "azp": "other-app"},
        {"aud": ["modelgate-approval", "other-app"]},
        {"aud": "modelgate-approval", "azp": "other-app"},
    ],
)
def test_oidc_core_3_1_3_7_an_id_token_for_other_audiences_is_no_session(claims):
    """OIDC Core 3.1.3.7: refuse an ID token with untrusted extra audiences, or whose azp is not our client."""
    from modelgate.approval.settings import SignInSettings
    from modelgate.approval.signin import NotSignedIn, SigningKeys, session_approver

    with LocalIssuer(client_ids=("modelgate-approval",)) as idp:
        settings = SignInSettings(
            issuer=idp.issuer,
            jwks_url=idp.jwks_url,
            authorize_url=idp.authorize_url,
            token_url=idp.token_url,
            client_id="modelgate-approval",
        )
        keys = SigningKeys(idp.jwks_url)
        user = idp.add_user("alice", "alice@example.com", ("approvers",))
        good = idp.id_token(user, "modelgate-approval")
        assert session_approver(settings, keys, good).email == "alice@example.com"
        assert session_approver(
            settings,
            keys,
            idp.mint(subject=user.subject, token_use="id", azp="modelgate-approval", aud="modelgate-approval"),
        )
        token = idp.mint(subject=user.subject, token_use="id", email="alice@example.com", email_verified=True, **claims)
        with pytest.raises(NotSignedIn, match="audience"):
            session_approver(settings, keys, token)
