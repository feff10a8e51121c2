"""A local OIDC issuer on loopback: an RSA signing key, its JWKS over HTTP, and a `mint()` for tokens.

Stands in for Salesforce / Cognito / any OIDC provider in tests and the demo. The verifying side is the real
one (modelgate.jwt_auth) pointed at this issuer's URLs.

It also plays the approvers' identity provider (a Cognito user pool's hosted UI): `add_user()` registers people
with their groups; `/oauth2/authorize` shows a sign-in page listing them (a browser, or a test, picks one) and
redirects back with an authorization code; `/oauth2/token` redeems the code (client id, redirect URI and PKCE
S256 verifier checked, one use) for an ID token carrying `email`, `cognito:groups`, `nonce`, `token_use=id`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.loopback_http import LoopbackHTTPServer


@dataclass(frozen=True)
class LocalUser:
    username: str
    email: str  # "" for a person without one (the ID token then has no `email` claim)
    groups: tuple[str, ...] = ()
    email_verified: bool = True

    @property
    def subject(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"modelgate-local-user:{self.username}"))


@dataclass
class _PendingCode:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    user: LocalUser
    expires: float


class LocalIssuer:
    """`with LocalIssuer() as issuer:` serves `issuer.jwks_url`; `issuer.mint(...)` signs tokens."""

    def __init__(
        self, audience: str = "modelgate-inference", client_ids: tuple[str, ...] = ("modelgate-approval",)
    ) -> None:
        self.audience = audience
        self.kid = uuid.uuid4().hex[:16]
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_requests = 0
        self._server: ThreadingHTTPServer | None = None
        self.client_ids = client_ids  # OAuth clients allowed to sign people in (the approval API)
        self.users: dict[str, LocalUser] = {}
        self._codes: dict[str, _PendingCode] = {}
        self._lock = threading.Lock()

    # -- people (the approvers' directory) -------------------------------------------------------------------
    def add_user(
        self, username: str, email: str, groups: tuple[str, ...] | list[str] = (), *, email_verified: bool = True
    ) -> LocalUser:
        user = LocalUser(username, email.lower(), tuple(groups), email_verified)
        self.users[username] = user
        return user

    def id_token(self, user: LocalUser, client_id: str, nonce: str | None = None, ttl_seconds: int = 3600) -> str:
        """The ID token the token endpoint returns for `user` (also handy to build a session directly)."""
        claims: dict[str, Any] = {
            "aud": client_id,
            "cognito:username": user.username,
            "cognito:groups": list(user.groups),
            "token_use": "id",
        }
        if user.email:
            claims.update(email=user.email, email_verified=user.email_verified)
        if nonce is not None:
            claims["nonce"] = nonce
        return self.mint(subject=user.subject, ttl_seconds=ttl_seconds, **claims)

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/oauth2/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/token"

    # -- keys -------------------------------------------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._private_key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def rotate(self) -> None:
        """Replace the signing key (new kid), as an issuer does on rotation."""
        self.kid = uuid.uuid4().hex[:16]
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return self._private_key

    # -- tokens -----------------------------------------------------------------------------------------------
    def mint(self, subject: str = "client-app", ttl_seconds: int = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self._private_key, algorithm="RS256", headers={"kid": self.kid})

    # -- HTTP -------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("issuer is not started (use it as a context manager)")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/.well-known/jwks.json"

    def __enter__(self) -> LocalIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                form = self._form()
                if path == "/oauth2/authorize":
                    status, body, headers = issuer._sign_in(form)
                    self._send(status, body, "text/html; charset=utf-8", headers)
                elif path == "/oauth2/token":
                    status, document = issuer._redeem(form)
                    self._send(status, json.dumps(document).encode(), "application/json")
                else:
                    self.send_error(404)

            def do_GET(self) -> None:
                if urlsplit(self.path).path == "/oauth2/authorize":
                    query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                    status, body = issuer._sign_in_page(query)
                    self._send(status, body, "text/html; charset=utf-8")
                    return
                if self.path == "/.well-known/jwks.json":
                    issuer.jwks_requests += 1
                    body = issuer.jwks()
                elif self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.issuer, "jwks_uri": issuer.jwks_url}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep test and demo output clean
                pass

        self._server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="local-oidc-issuer", daemon=True).start()
        return self

    # -- authorization code + PKCE (the approvers' sign-in) -------------------------------------------------
    def _check_authorize(self, params: dict[str, str]) -> str | None:
        if params.get("client_id") not in self.client_ids:
            return "unknown client_id"
        if params.get("response_type") != "code":
            return "response_type must be code"
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return "PKCE (S256) is required"
        if not params.get("redirect_uri", "").startswith(("http://127.0.0.1", "https://")):
            return "redirect_uri not allowed"
        return None

    def _sign_in_page(self, params: dict[str, str]) -> tuple[int, bytes]:
        problem = self._check_authorize(params)
        if problem:
            return 400, f"<h1>Bad request</h1><p>{html.escape(problem)}</p>".encode()
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
        )
        buttons = "".join(
            f'<button type="submit" name="username" value="{name}" id="user-{name}">{name} ({email})</button><br>'
            for name, email in ((html.escape(u.username), html.escape(u.email)) for u in self.users.values())
        )
        page = (
            "<!doctype html><html><head><title>Sign in - local identity provider</title></head><body>"
            f'<h1>Sign in</h1><form method="post" action="/oauth2/authorize">{hidden}{buttons}</form></body></html>'
        )
        return 200, page.encode()

    def _sign_in(self, form: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        problem = self._check_authorize(form) or (None if form.get("username") in self.users else "unknown user")
        if problem:
            return 400, f"<h1>Bad request</h1><p>{html.escape(problem)}</p>".encode(), {}
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _PendingCode(
                client_id=form["client_id"],
                redirect_uri=form["redirect_uri"],
                challenge=form["code_challenge"],
                nonce=form.get("nonce"),
                user=self.users[form["username"]],
                expires=time.time() + 300,
            )
        location = f"{form['redirect_uri']}?{urlencode({'code': code, 'state': form.get('state', '')})}"
        return 302, b"", {"Location": location}

    def authorization_code(self, user: LocalUser, *, client_id: str, redirect_uri: str, challenge: str, nonce: str):
        """What `_sign_in` does for a browser, for tests that drive the flow without HTML."""
        status, _, headers = self._sign_in(
            {
                "client_id": client_id,
                "response_type": "code",
                "code_challenge_method": "S256",
                "code_challenge": challenge,
                "redirect_uri": redirect_uri,
                "nonce": nonce,
                "username": user.username,
            }
        )
        if status != 302:
            raise ValueError("sign-in refused")
        return parse_qs(urlsplit(headers["Location"]).query)["code"][0]

    def _redeem(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pending = self._codes.pop(form.get("code", ""), None)  # one use, whatever happens next
        if form.get("grant_type") != "authorization_code" or pending is None or pending.expires < time.time():
            return 400, {"error": "invalid_grant"}
        if form.get("client_id") != pending.client_id or form.get("redirect_uri") != pending.redirect_uri:
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or challenge != pending.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        token = self.id_token(pending.user, pending.client_id, pending.nonce)
        return 200, {"id_token": token, "access_token": token, "token_type": "Bearer", "expires_in": 3600}

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
