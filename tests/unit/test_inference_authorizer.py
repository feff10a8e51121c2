"""The inference API's JWT authorizer: the catalogue of bad tokens, and scopes -> the models a caller may invoke.

Keys are generated here (the local issuer's RSA key, an attacker's RSA and EC keys); the verifying side is the
real authorizer handler's function with the real JWKS cache fetching the issuer's keys over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lambdas.inference_authorizer import authorize
from modelgate.jwt_auth import JwksCache, JwtPolicy, TokenRejected, verify
from modelgate.serving.access import ModelAccess, ScopeError, model_access
from sandbox.oidc_issuer import LocalIssuer

AUDIENCE = "modelgate-inference"
METHOD_ARN = "arn:aws:execute-api:eu-west-1:222222222222:abc123/prod/POST/groups/energy-forecast/models/acme/invoke"
PREFIX = "arn:aws:execute-api:eu-west-1:222222222222:abc123/prod"


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer(audience=AUDIENCE) as running:
        yield running


@pytest.fixture
def verifier(issuer):
    return JwtPolicy(issuer=issuer.issuer, audience=AUDIENCE), JwksCache(issuer.jwks_url)


def call(token: str, verifier, scheme: str = "Bearer") -> dict:
    policy, keys = verifier
    return authorize(
        {"type": "TOKEN", "authorizationToken": f"{scheme} {token}", "methodArn": METHOD_ARN}, policy, keys
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(issuer: LocalIssuer, **overrides) -> dict:
    now = int(time.time())
    base = {
        "iss": issuer.issuer,
        "aud": AUDIENCE,
        "sub": "salesforce-org-1",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "scope": "inference:invoke",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def signed(issuer: LocalIssuer, payload: dict, **headers) -> str:
    return jwt.encode(payload, issuer.private_key, algorithm="RS256", headers={"kid": issuer.kid, **headers})


def tamper_payload(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{header}.{b64(json.dumps(data).encode())}.{signature}"


def tamper_header(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    data.update(changes)
    return f"{b64(json.dumps(data).encode())}.{payload}.{signature}"


def bad_tokens(issuer: LocalIssuer) -> dict[str, tuple[str, str]]:
    """case -> (token, the reason it must be refused for). Built fresh per call, so time-based cases hold."""
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_ec = ec.generate_private_key(ec.SECP256R1())
    public_pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = signed(issuer, claims(issuer))
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    hs_payload = b64(json.dumps(claims(issuer)).encode())
    hs_signature = b64(hmac.new(public_pem, f"{hs_header}.{hs_payload}".encode(), hashlib.sha256).digest())
    none_header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": issuer.kid}).encode())
    return {
        "alg none, unsigned": (f"{none_header}.{hs_payload}.", "algorithm"),
        "HS256 signed with the issuer's public key (key confusion)": (
            f"{hs_header}.{hs_payload}.{hs_signature}",
            "algorithm",
        ),
        "unknown kid": (
            jwt.encode(claims(issuer), attacker, algorithm="RS256", headers={"kid": "attacker-key"}),
            "unknown_kid",
        ),
        "issuer's kid, attacker's signature": (
            jwt.encode(claims(issuer), attacker, algorithm="RS256", headers={"kid": issuer.kid}),
            "signature",
        ),
        "ES256 header on the issuer's RSA kid": (
            jwt.encode(claims(issuer), attacker_ec, algorithm="ES256", headers={"kid": issuer.kid}),
            "algorithm",
        ),
        "payload tampered after signing (sub)": (tamper_payload(good, sub="someone-else"), "signature"),
        "payload tampered after signing (scope)": (
            tamper_payload(signed(issuer, claims(issuer, scope="inference:invoke:acme")), scope="inference:invoke"),
            "signature",
        ),
        "header tampered (alg RS256 -> RS512)": (tamper_header(good, alg="RS512"), "algorithm"),
        "signature stripped": (good.rsplit(".", 1)[0] + ".", "signature"),
        "no kid in the header": (jwt.encode(claims(issuer), issuer.private_key, algorithm="RS256"), "no_kid"),
        "expired": (
            signed(issuer, claims(issuer, iat=int(time.time()) - 3600, nbf=None, exp=int(time.time()) - 600)),
            "expired",
        ),
        "not yet valid (nbf)": (signed(issuer, claims(issuer, nbf=int(time.time()) + 600)), "not_yet_valid"),
        "issued in the future (iat)": (
            signed(issuer, claims(issuer, iat=int(time.time()) + 600, nbf=None)),
            "not_yet_valid",
        ),
        "wrong issuer": (signed(issuer, claims(issuer, iss="https://login.salesforce.com.evil.example")), "issuer"),
        "wrong audience": (signed(issuer, claims(issuer, aud="another-api")), "audience"),
        "audience list without ours": (signed(issuer, claims(issuer, aud=["another-api", "third-api"])), "audience"),
        "missing exp": (signed(issuer, claims(issuer, exp=None)), "missing_claim"),
        "missing sub": (signed(issuer, claims(issuer, sub=None)), "missing_claim"),
        "missing aud": (signed(issuer, claims(issuer, aud=None)), "missing_claim"),
        "missing iss": (signed(issuer, claims(issuer, iss=None)), "missing_claim"),
        "malformed scope claim": (signed(issuer, claims(issuer, scope=["inference:invoke"], scp=42)), "scope"),
        "oversized (9 KB)": (signed(issuer, claims(issuer, padding="x" * 9000)), "oversized"),
        "garbage": ("not-a-jwt", "malformed"),
        "random base64 segments": (f"{b64(b'{')}.{b64(b'}')}.{b64(b'x')}", "malformed"),
        "five segments (JWE shape)": (good + ".AAAA.BBBB", "malformed"),
        "empty": ("", "missing"),
    }


def test_a_valid_token_is_accepted_with_the_models_its_scopes_allow(issuer, verifier):
    answer = call(issuer.mint(scope="inference:invoke:acme inference:invoke:globex"), verifier)
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Resource"]) == [
        f"{PREFIX}/GET/groups/*/health",
        f"{PREFIX}/GET/health",
        f"{PREFIX}/POST/groups/*/models/acme/invoke",
        f"{PREFIX}/POST/groups/*/models/globex/invoke",
    ]
    assert answer["context"]["models"] == "acme globex"
    assert answer["principalId"] == "client-app"


def test_the_catalogue_of_bad_tokens_is_refused(issuer, verifier):
    tokens = bad_tokens(issuer)
    assert len(tokens) >= 15
    outcomes = {}
    for case, (token, _) in tokens.items():
        try:
            call(token, verifier)
            outcomes[case] = "accepted"
        except Exception as error:  # API Gateway answers 401 only for exactly this message
            outcomes[case] = str(error)
    assert {case: outcome for case, outcome in outcomes.items() if outcome != "Unauthorized"} == {}


def test_each_bad_token_is_refused_for_its_own_reason(issuer, verifier):
    """No case passes by accident (e.g. every token failing on one fixture mistake)."""
    policy, keys = verifier
    for case, (token, expected) in bad_tokens(issuer).items():
        try:
            model_access(verify(token, policy, keys))
            reason = "accepted"
        except TokenRejected as rejected:
            reason = rejected.reason
        except ScopeError:
            reason = "scope"
        assert reason == expected, f"{case}: refused for {reason!r}, expected {expected!r}"


def test_the_catalogue_holds_only_tokens_that_differ_from_a_good_one_in_one_way(issuer, verifier):
    """Guards the catalogue itself: the same construction with nothing wrong must pass."""
    assert call(signed(issuer, claims(issuer)), verifier)["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert call(signed(issuer, claims(issuer, aud=["another-api", AUDIENCE])), verifier)["principalId"]
    assert call(signed(issuer, claims(issuer, nbf=int(time.time()) + 30)), verifier), "within the clock skew"


@pytest.mark.parametrize(
    ("header_value", "why"),
    [("Basic dXNlcjpwYXNz", "another scheme"), ("Bearer", "no token"), ("", "empty header")],
)
def test_anything_but_a_bearer_token_is_unauthorized(verifier, header_value, why):
    policy, keys = verifier
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize({"type": "TOKEN", "authorizationToken": header_value, "methodArn": METHOD_ARN}, policy, keys)


def test_a_valid_token_without_an_inference_scope_is_denied_everything(issuer, verifier):
    for scope in ("openid profile", "inference:invoke:", "inference:invoke:Not_A_Model", "inference:read"):
        answer = call(issuer.mint(scope=scope), verifier)
        (statement,) = answer["policyDocument"]["Statement"]
        assert (statement["Effect"], statement["Resource"]) == ("Deny", f"{PREFIX}/*"), scope


def test_the_all_models_scope_allows_every_model_route_and_nothing_else(issuer, verifier):
    answer = call(issuer.mint(scp=["inference:invoke"]), verifier)
    assert sorted(answer["policyDocument"]["Statement"][0]["Resource"]) == [
        f"{PREFIX}/GET/groups/*/health",
        f"{PREFIX}/GET/health",
        f"{PREFIX}/POST/groups/*/models/*/invoke",
    ]
    assert answer["context"]["models"] == "*"


def test_group_scopes_reach_one_model_groups_models_and_no_other_groups(issuer, verifier):
    """Least privilege per model group: `<group>/*` is every customer of that group, `<group>/<customer>` one."""
    answer = call(issuer.mint(scope="inference:invoke:churn-scores/* inference:invoke:energy-forecast/acme"), verifier)
    (statement,) = answer["policyDocument"]["Statement"]
    assert sorted(statement["Resource"]) == [
        f"{PREFIX}/GET/groups/*/health",
        f"{PREFIX}/GET/health",
        f"{PREFIX}/POST/groups/churn-scores/models/*/invoke",
        f"{PREFIX}/POST/groups/energy-forecast/models/acme/invoke",
    ]
    access = ModelAccess.from_context(answer["context"]["models"])  # what the invoke Lambda checks again
    assert access.allows("churn-scores", "globex")
    assert access.allows("energy-forecast", "acme")
    assert not access.allows("energy-forecast", "globex"), "acme of energy-forecast only"
    assert not access.allows("energy-forecast-eu", "acme"), "a group name prefix is another group"
    tenant = ModelAccess.from_context(call(issuer.mint(scope="inference:invoke:acme"), verifier)["context"]["models"])
    assert tenant.allows("churn-scores", "acme")
    assert tenant.allows("energy-forecast", "acme")
    assert not tenant.allows("churn-scores", "globex")


def test_malformed_group_scopes_grant_nothing(issuer, verifier):
    for scope in (
        "inference:invoke:bad_group/*",
        "inference:invoke:churn-scores/",
        "inference:invoke:/acme",
        "inference:invoke:churn-scores/acme/more",
        "inference:invoke:*/acme",
        "inference:invoke:churn-scores/Not_A_Model",
    ):
        (statement,) = call(issuer.mint(scope=scope), verifier)["policyDocument"]["Statement"]
        assert (statement["Effect"], statement["Resource"]) == ("Deny", f"{PREFIX}/*"), scope
    forged = ModelAccess.from_context("bad_group/* */acme churn-scores/acme/more")
    assert forged.empty, "a context that did not come from model_access grants nothing either"


def test_a_token_naming_too_many_models_is_refused(issuer, verifier):
    scope = " ".join(f"inference:invoke:customer-{i}" for i in range(101))
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        call(issuer.mint(scope=scope), verifier)


def test_verification_is_warm_after_the_first_token(issuer, verifier):
    before = issuer.jwks_requests
    for _ in range(10):
        call(issuer.mint(), verifier)
    assert issuer.jwks_requests - before == 1, "the JWKS is fetched once, then served from the cache"
