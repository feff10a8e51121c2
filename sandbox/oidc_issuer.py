"""A local OIDC issuer on loopback: an RSA signing key, its JWKS over HTTP, and a `mint()` for tokens.

Stands in for Salesforce / Cognito / any OIDC provider in tests and the demo. The verifying side is the real
one (modelgate.jwt_auth) pointed at this issuer's URLs.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class LocalIssuer:
    """`with LocalIssuer() as issuer:` serves `issuer.jwks_url`; `issuer.mint(...)` signs tokens."""

    def __init__(self, audience: str = "modelgate-inference") -> None:
        self.audience = audience
        self.kid = uuid.uuid4().hex[:16]
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_requests = 0
        self._server: ThreadingHTTPServer | None = None

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
            def do_GET(self) -> None:
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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="local-oidc-issuer", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
