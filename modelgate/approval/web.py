"""HTTP plumbing of the approval API (cookies, forms, redirects), kept out of the handler so it stays thin."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

from modelgate.approval.pages import SECURITY_HEADERS
from modelgate.approval.signin import SESSION_COOKIE, SIGN_IN_COOKIE

MAX_FORM_BYTES = 16_384


@dataclass(frozen=True)
class HttpRequest:
    """The parts of an API Gateway (REST, Lambda proxy) event the approval API reads.

    A small typed parser instead of Powertools' event classes: importing those (all event types at once) costs
    ~20 ms of every cold start, a tenth of the handler's budget.
    """

    resource: str
    method: str
    path_parameters: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    body: str | None
    is_base64_encoded: bool

    @classmethod
    def from_event(cls, event: dict) -> HttpRequest:
        if not isinstance(event, dict) or "httpMethod" not in event:
            raise ValueError("not an API Gateway proxy event")
        return cls(
            resource=str(event.get("resource") or ""),
            method=str(event["httpMethod"]),
            path_parameters=dict(event.get("pathParameters") or {}),
            query=dict(event.get("queryStringParameters") or {}),
            headers=dict(event.get("headers") or {}),
            body=event.get("body"),
            is_base64_encoded=bool(event.get("isBase64Encoded")),
        )

    def query_value(self, name: str) -> str:
        return str(self.query.get(name) or "")


def cookie_name(base: str, secure: bool) -> str:
    # `__Host-` cookies are only accepted over HTTPS, from this host, for path "/": no subdomain can set them.
    return f"__Host-{base}" if secure else base


def read_cookies(headers: dict[str, str] | None) -> dict[str, str]:
    raw = next((v for k, v in (headers or {}).items() if k.lower() == "cookie"), "")
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def session_cookie(cookies: dict[str, str], secure: bool) -> str | None:
    return cookies.get(cookie_name(SESSION_COOKIE, secure))


def sign_in_cookie(cookies: dict[str, str], secure: bool) -> str | None:
    return cookies.get(cookie_name(SIGN_IN_COOKIE, secure))


def set_cookie(base: str, value: str, max_age: int, secure: bool) -> str:
    attributes = [f"{cookie_name(base, secure)}={value}", "Path=/", f"Max-Age={max(max_age, 0)}", "HttpOnly"]
    # Lax: sent when the approver follows the e-mail link and on the IdP's redirect back; never on a
    # cross-site POST, so another site cannot submit a decision with this session.
    attributes.append("SameSite=Lax")
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def read_form(body: str | None, is_base64: bool) -> dict[str, str]:
    if not body:
        return {}
    raw = base64.b64decode(body) if is_base64 else body.encode()
    if len(raw) > MAX_FORM_BYTES:
        raise ValueError("form too large")
    return {name: values[-1] for name, values in parse_qs(raw.decode(), keep_blank_values=True).items()}


def same_origin(headers: dict[str, str] | None, api_url: str) -> bool:
    """False only when the browser says the request comes from another origin (Origin header)."""
    origin = next((v for k, v in (headers or {}).items() if k.lower() == "origin"), None)
    if origin in (None, "null"):
        return origin is None
    expected = urlsplit(api_url)
    return origin.rstrip("/") == f"{expected.scheme}://{expected.netloc}"


def html_response(status: int, body: str, cookies: list[str] | None = None) -> dict:
    response = {"statusCode": status, "headers": dict(SECURITY_HEADERS), "body": body}
    if cookies:
        response["multiValueHeaders"] = {"Set-Cookie": cookies}
    return response


def redirect(location: str, cookies: list[str] | None = None, status: int = 302) -> dict:
    response = {
        "statusCode": status,
        "headers": {"Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        "body": "",
    }
    if cookies:
        response["multiValueHeaders"] = {"Set-Cookie": cookies}
    return response
