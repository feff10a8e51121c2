"""Who is deciding: approvers sign in with OIDC (authorization code + PKCE) before any decision.

Holding a link is not enough. The approval API sends the browser to the approvers' identity provider (the
stack's Cognito user pool, optionally federated with the company directory; locally sandbox.oidc_issuer),
receives an authorization code at /auth/callback, redeems it with the PKCE verifier, verifies the ID token
(modelgate.jwt_auth: issuer, audience = our client id, signature from the JWKS, expiry, nonce) and keeps it as
the session cookie (HttpOnly, SameSite=Lax; Secure + `__Host-` prefix over HTTPS). Every request re-verifies
that token, so a session lives exactly as long as the ID token.

The sign-in state (state, nonce, PKCE verifier, where to return) travels in a short-lived cookie sealed with
the KMS MAC key, so the API keeps no server-side session store. Decisions are POSTs carrying a CSRF token:
a MAC over (approver, link token id, action, expiry), which a page on another site can neither read nor forge.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from modelgate.approval.links import LinkClaims
from modelgate.approval.sealed import MacSigner, SealBroken, seal, unseal
from modelgate.approval.settings import SignInSettings

SIGN_IN_SECONDS = 600  # the round trip through the identity provider must finish within this
CSRF_SECONDS = 3600
SESSION_COOKIE = "mg_session"
SIGN_IN_COOKIE = "mg_signin"


class SignInFailed(Exception):
    """The sign-in round trip did not produce a trustworthy identity (never retried silently)."""


class NotSignedIn(Exception):
    pass


class IdentityProviderUnavailable(Exception):
    """The identity provider's signing keys cannot be fetched: nobody can be signed in right now."""


class SigningKeys:
    """The identity provider's JWKS (modelgate.jwt_auth.JwksCache), created on first use.

    PyJWT and cryptography are imported then too: an approver's first request (no session yet, so a redirect
    to sign in) does not need them, which keeps the approval API's cold start short.
    """

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url
        self._cache = None
        self._lock = threading.Lock()

    def cache(self):  # -> modelgate.jwt_auth.JwksCache
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    from modelgate.jwt_auth import JwksCache

                    self._cache = JwksCache(url=self.jwks_url)
        return self._cache


class _TokenRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _verify(token: str, signin: SignInSettings, keys: SigningKeys) -> dict:
    """Claims of an ID token of our client (modelgate.jwt_auth.verify), or _TokenRefused / IdP unavailable."""
    from modelgate.jwt_auth import JwksUnavailable, JwtPolicy, TokenRejected, verify

    try:
        claims = verify(token, JwtPolicy(issuer=signin.issuer, audience=signin.client_id), keys.cache())
    except TokenRejected as error:
        raise _TokenRefused(error.reason) from None
    except JwksUnavailable as error:
        raise IdentityProviderUnavailable(str(error)) from None
    # OIDC Core 3.1.3.7 (3, 4, 5): our client must be the only audience and, when named, the authorized party;
    # a token issued to another app that merely lists us is not a sign-in to ModelGate.
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if set(audiences) != {signin.client_id} or claims.get("azp", signin.client_id) != signin.client_id:
        raise _TokenRefused("audience")
    return claims


class CsrfRejected(Exception):
    pass


@dataclass(frozen=True)
class SignedIn:
    id_token: str  # the session cookie's value
    approver: Approver
    return_to: str  # path of the API to go back to
    expires_at: int  # the ID token's expiry (epoch seconds): the session's end


@dataclass(frozen=True)
class Approver:
    subject: str
    email: str  # verified by the identity provider (`email_verified` true), else ""
    username: str
    groups: tuple[str, ...]
    unverified_email: str = ""  # an `email` claim the provider does not vouch for: never an identity, yet
    # still compared with the registrant (separation of duties fails closed)

    @property
    def display(self) -> str:
        return self.email or self.username or self.subject

    @property
    def identities(self) -> tuple[str, ...]:
        """Everything this person could be known as (for the registrant comparison)."""
        return tuple(value for value in (self.email, self.unverified_email, self.username, self.subject) if value)


def _groups(value: object) -> tuple[str, ...]:
    """Group claims arrive as a JSON list (Cognito) or, from some federated IdPs, as one delimited string."""
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value)
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return tuple(part.strip().strip('"') for part in text.replace(";", ",").split(",") if part.strip())
    return ()


def approver_from_claims(claims: dict, groups_claim: str) -> Approver:
    """`groups_claim` may name several claims, comma-separated (e.g. `cognito:groups,custom:groups`: the pool's
    own groups and those a federated company directory sends); membership is their union."""
    groups: list[str] = []
    for claim in (name.strip() for name in groups_claim.split(",") if name.strip()):
        groups.extend(group for group in _groups(claims.get(claim)) if group not in groups)
    email = claims.get("email")
    email = email.strip().lower() if isinstance(email, str) else ""
    # OIDC Core 5.1: email_verified is a boolean; some federated providers send it as the string "true".
    verified = claims.get("email_verified") is True or str(claims.get("email_verified")).lower() == "true"
    return Approver(
        subject=str(claims.get("sub", "")),
        email=email if verified else "",
        username=str(claims.get("cognito:username") or claims.get("preferred_username") or ""),
        groups=tuple(groups),
        unverified_email="" if verified else email,
    )


def _pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def callback_url(api_url: str) -> str:
    return f"{api_url}/auth/callback"


def begin_sign_in(
    signin: SignInSettings, signer: MacSigner, *, api_url: str, return_to: str, now: int, prompt: str | None = None
):
    """(authorization URL to redirect to, sealed sign-in cookie value). `prompt="login"` (OIDC Core 3.1.2.1)
    asks the identity provider to ask who signs in even if it has a session (to sign in as someone else)."""
    if not return_to.startswith("/") or return_to.startswith("//"):
        raise ValueError("return_to must be a path of this API")
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    cookie = seal(
        "signin",
        {"state": state, "nonce": nonce, "verifier": verifier, "to": return_to, "exp": now + SIGN_IN_SECONDS},
        signer,
    )
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": signin.client_id,
            "redirect_uri": callback_url(api_url),
            "scope": "openid email profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": _pkce_challenge(verifier),
            "code_challenge_method": "S256",
            **({"prompt": prompt} if prompt else {}),
        }
    )
    return f"{signin.authorize_url}?{query}", cookie


def post_form(url: str, fields: dict[str, str], timeout: float = 5.0) -> dict:
    """POST a form to the token endpoint; https only, except loopback (local stand-ins)."""
    from modelgate.jwt_auth import plain_http_refusal

    refusal = plain_http_refusal(url)
    if refusal:
        raise SignInFailed(f"refusing to call the token endpoint: {refusal}")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            return json.loads(response.read(100_000))
    except urllib.error.HTTPError as error:
        raise SignInFailed(f"the identity provider refused the sign-in code (HTTP {error.code})") from None
    except (OSError, ValueError) as error:
        raise SignInFailed(f"the identity provider's token endpoint failed: {error}") from None


def finish_sign_in(
    signin: SignInSettings,
    signer: MacSigner,
    keys: SigningKeys,
    *,
    api_url: str,
    code: str,
    state: str,
    cookie: str | None,
    now: int,
    post: Callable[[str, dict[str, str]], dict] = post_form,
) -> SignedIn:
    if not cookie:
        raise SignInFailed("the sign-in cookie is missing: start again from the link in the e-mail")
    try:
        pending = unseal("signin", cookie, signer)
    except SealBroken:
        raise SignInFailed("the sign-in cookie is not valid: start again from the link in the e-mail") from None
    if now >= int(pending.get("exp", 0)):
        raise SignInFailed("the sign-in took too long: start again from the link in the e-mail")
    if not state or not secrets.compare_digest(str(pending.get("state", "")), state):
        raise SignInFailed("the sign-in response does not belong to this browser's sign-in (state mismatch)")
    if not code:
        raise SignInFailed("the identity provider returned no authorization code")
    tokens = post(
        signin.token_url,
        {
            "grant_type": "authorization_code",
            "client_id": signin.client_id,
            "code": code,
            "redirect_uri": callback_url(api_url),
            "code_verifier": pending["verifier"],
        },
    )
    id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
    if not isinstance(id_token, str):
        raise SignInFailed("the identity provider returned no ID token")
    try:
        claims = _verify(id_token, signin, keys)
    except _TokenRefused as error:
        raise SignInFailed(f"the ID token was refused ({error.reason})") from None
    if claims.get("nonce") != pending.get("nonce"):
        raise SignInFailed("the ID token was issued for another sign-in (nonce mismatch)")
    return SignedIn(id_token, approver_from_claims(claims, signin.groups_claim), str(pending["to"]), int(claims["exp"]))


def session_approver(signin: SignInSettings, keys: SigningKeys, session: str | None) -> Approver:
    """The approver of a session cookie (a still-valid ID token), or NotSignedIn."""
    if not session:
        raise NotSignedIn("not signed in")
    try:
        claims = _verify(session, signin, keys)
    except _TokenRefused as error:
        raise NotSignedIn(f"session is not valid ({error.reason})") from None
    if claims.get("token_use", "id") != "id":
        raise NotSignedIn("session token is not an ID token")
    return approver_from_claims(claims, signin.groups_claim)


# -- CSRF ------------------------------------------------------------------------------------------------------
def csrf_token(signer: MacSigner, approver: Approver, link: LinkClaims, now: int) -> str:
    return seal(
        "csrf",
        {"sub": approver.subject, "jti": link.token_id, "act": link.action, "exp": now + CSRF_SECONDS},
        signer,
    )


def check_csrf(signer: MacSigner, token: str | None, approver: Approver, link: LinkClaims, now: int) -> None:
    try:
        payload = unseal("csrf", token or "", signer)
    except SealBroken:
        raise CsrfRejected("the form's CSRF token is missing or not valid") from None
    expected = {"sub": approver.subject, "jti": link.token_id, "act": link.action}
    if any(payload.get(name) != value for name, value in expected.items()):
        raise CsrfRejected("the form was not issued to you for this link")
    if now >= int(payload.get("exp", 0)):
        raise CsrfRejected("the form has expired: open the link again")


def in_group(approver: Approver, group: str) -> bool:
    return group in approver.groups
