"""Approval API (API Gateway REST, Lambda proxy): the pages behind the e-mail links and the decisions.

GET  /links/{action}?token=...  confirmation page (signs the approver in first); changes nothing (HEAD: no body)
POST /links/{action}            the decision (form: token, csrf, reason); any other method: 405
GET  /auth/callback             end of the OIDC sign-in: sets the session cookie, back to the page
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from urllib.parse import quote

from aws_lambda_powertools import Logger

from modelgate.approval import decisions, pages, signin, web
from modelgate.approval.services import Services
from modelgate.approval.settings import SignInSettings
from modelgate.approval.web import HttpRequest

logger = Logger(service="modelgate-approval-api")


@dataclass(frozen=True)
class Runtime:
    services: Services
    sign_in: SignInSettings
    keys: signin.SigningKeys  # the identity provider's signing keys, cached for the container's life


@cache
def runtime() -> Runtime:
    sign_in = SignInSettings.from_environ()
    return Runtime(Services.from_environ(), sign_in, signin.SigningKeys(sign_in.jwks_url))


def _idp_unavailable(error: Exception) -> dict:
    logger.error("identity provider keys unavailable", extra={"detail": str(error)})
    message = "The sign-in service cannot be reached right now; nothing was changed. Try the link again shortly."
    return web.html_response(503, pages.refusal("Sign-in unavailable", message))


def _refused(refused: decisions.DecisionRefused) -> dict:
    logger.info("refused", extra={"reason": refused.reason, "detail": refused.message})
    return web.html_response(refused.status, pages.refusal(refused.title, refused.message))


def links_page(rt: Runtime, event: HttpRequest, action: str) -> dict:
    services, sign_in, keys = rt.services, rt.sign_in, rt.keys
    api_url, secure = services.settings.api_url, services.settings.api_url.startswith("https://")
    token = event.query_value("token")
    try:
        link = decisions.read_link(services, token, action)  # bad links are refused before any sign-in
        approver = signin.session_approver(sign_in, keys, web.session_cookie(web.read_cookies(event.headers), secure))
    except decisions.DecisionRefused as refused:
        return _refused(refused)
    except signin.IdentityProviderUnavailable as error:
        return _idp_unavailable(error)
    except signin.NotSignedIn:
        location, state = signin.begin_sign_in(
            sign_in,
            services.signer,
            api_url=api_url,
            return_to=f"/links/{action}?token={quote(token)}",
            now=services.epoch(),
        )
        return web.redirect(location, [web.set_cookie(signin.SIGN_IN_COOKIE, state, signin.SIGN_IN_SECONDS, secure)])
    logger.append_keys(model_package_arn=link.model_package_arn, action=action)
    try:
        review = decisions.review(services, token, action, approver)
    except decisions.DecisionRefused as refused:
        return _refused(refused)
    return web.html_response(200, pages.confirmation(review, api_url))


def decide(rt: Runtime, event: HttpRequest, action: str) -> dict:
    services, sign_in, keys = rt.services, rt.sign_in, rt.keys
    api_url, secure = services.settings.api_url, services.settings.api_url.startswith("https://")
    if not web.same_origin(event.headers, api_url):
        return web.html_response(403, pages.refusal("Refused", "Decisions can only be posted from ModelGate's page."))
    try:
        form = web.read_form(event.body, event.is_base64_encoded)
    except (ValueError, UnicodeDecodeError):
        return web.html_response(400, pages.refusal("Bad request", "The form could not be read."))
    try:
        approver = signin.session_approver(sign_in, keys, web.session_cookie(web.read_cookies(event.headers), secure))
    except signin.NotSignedIn:
        return web.html_response(
            401, pages.refusal("Please sign in again", "Your session has expired. Open the link from the e-mail again.")
        )
    except signin.IdentityProviderUnavailable as error:
        return _idp_unavailable(error)
    try:
        outcome = decisions.decide(
            services, form.get("token", ""), action, approver, form.get("csrf"), form.get("reason", "")
        )
    except decisions.DecisionRefused as refused:
        return _refused(refused)
    except decisions.ApplyFailed as failed:
        logger.exception("decision committed but not applied", extra={"decision_id": failed.decision.decision_id})
        minutes = decisions.RESUME_AFTER_SECONDS // 60 + 1
        message = (
            f"Your decision ({failed.decision.state}) is recorded, but updating the model registry or Parameter "
            f"Store failed. Open the link from the e-mail again in {minutes} minutes to finish it."
        )
        return web.html_response(500, pages.refusal("Recorded, not yet applied", message))
    decision = outcome.decision
    logger.info(
        "decided",
        extra={
            "model_version": decision.model_version,
            "state": decision.state,
            "decided_by": decision.decided_by,
            "decision_id": decision.decision_id,
            "resumed": outcome.resumed,
        },
    )
    return web.html_response(200, pages.result(outcome))


def callback(rt: Runtime, event: HttpRequest) -> dict:
    services, sign_in, keys = rt.services, rt.sign_in, rt.keys
    api_url, secure = services.settings.api_url, services.settings.api_url.startswith("https://")
    if event.query_value("error"):
        message = f"The identity provider said: {event.query_value('error')}."
        return web.html_response(400, pages.refusal("Sign-in failed", message))
    now = services.epoch()
    try:
        signed_in = signin.finish_sign_in(
            sign_in,
            services.signer,
            keys,
            api_url=api_url,
            code=event.query_value("code"),
            state=event.query_value("state"),
            cookie=web.sign_in_cookie(web.read_cookies(event.headers), secure),
            now=now,
        )
    except (signin.SignInFailed, signin.IdentityProviderUnavailable) as error:
        logger.warning("sign-in failed", extra={"detail": str(error)})
        return web.html_response(400, pages.refusal("Sign-in failed", str(error)))
    logger.info("signed in", extra={"approver": signed_in.approver.display})
    return web.redirect(
        f"{api_url}{signed_in.return_to}",
        [
            web.set_cookie(signin.SESSION_COOKIE, signed_in.id_token, signed_in.expires_at - now, secure),
            web.set_cookie(signin.SIGN_IN_COOKIE, "", 0, secure),
        ],
    )


def route(rt: Runtime, event: dict) -> dict:
    try:
        request = HttpRequest.from_event(event)
    except ValueError as error:
        return web.html_response(400, pages.refusal("Bad request", str(error)))
    resource, method = request.resource, request.method
    if resource == "/links/{action}":
        action = request.path_parameters.get("action", "")
        if action not in ("approve", "reject"):
            return web.html_response(404, pages.refusal("Not found", f"There is no '{action}' action."))
        if method in ("GET", "HEAD"):
            page = links_page(rt, request, action)
            return {**page, "body": ""} if method == "HEAD" else page  # RFC 9110 9.3.2: GET's headers, no body
        if method == "POST":
            return decide(rt, request, action)
        response = web.html_response(405, pages.refusal("Method not allowed", f"{method} cannot be used here."))
        response["headers"]["Allow"] = "GET, HEAD, POST"
        return response
    if resource == "/auth/callback" and method == "GET":
        return callback(rt, request)
    return web.html_response(404, pages.refusal("Not found", "There is no such page."))


@logger.inject_lambda_context(clear_state=True)  # no keys leak between invocations
def handler(event: dict, context: object) -> dict:
    rt = runtime()
    logger.append_keys(**rt.services.settings.log_keys())
    return route(rt, event)
