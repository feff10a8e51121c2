"""Approval API (API Gateway REST, Lambda proxy): the pages behind the e-mail links and the decisions.

GET  /links/{action}?token=...  confirmation page (signs the approver in first); changes nothing (HEAD: no body).
                                After the approver's own decision on that link: its result page
                                (post-redirect-get, the back button). `&view=report`: the evaluation report page;
                                `&signin=switch`: sign in as someone else
POST /links/{action}            the decision (form: token, csrf, reason); 303 to the GET page above; any other
                                method: 405
GET  /auth/callback             end of the OIDC sign-in: sets the session cookie, back to the page

One API serves every model of its environment: the link names the model package group. A link is verified once
per request (decisions.read_link) and its claims passed down.
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


def _frame(rt: Runtime, group: str | None = None) -> pages.Frame:
    settings = rt.services.settings
    model = next((m for m in settings.models if m.group == group), None) if group else None
    return pages.Frame.of(settings, model)


def _idp_unavailable(rt: Runtime, error: Exception) -> dict:
    logger.error("identity provider keys unavailable", extra={"detail": str(error)})
    message = "The sign-in service cannot be reached right now."
    step = "Try the link again in a few minutes."
    return web.html_response(503, pages.refusal("Sign-in unavailable", message, frame=_frame(rt), next_step=step))


def _refused(
    rt: Runtime, refused: decisions.DecisionRefused, token: str = "", action: str = "", group: str | None = None
) -> dict:
    logger.info("refused", extra={"reason": refused.reason, "detail": refused.message})
    switch = pages.link_url(rt.services.settings.api_url, action, token, signin="switch") if token else None
    frame = _frame(rt, group)
    page = pages.refusal(refused.title, refused.message, reason=refused.reason, frame=frame, switch_url=switch)
    return web.html_response(refused.status, page)


def _sign_in(rt: Runtime, return_to: str, secure: bool, prompt: str | None = None, clear_session: bool = False):
    services = rt.services
    location, state = signin.begin_sign_in(
        rt.sign_in, services.signer, api_url=services.settings.api_url, return_to=return_to, now=services.epoch(),
        prompt=prompt,
    )  # fmt: skip
    cookies = [web.set_cookie(signin.SIGN_IN_COOKIE, state, signin.SIGN_IN_SECONDS, secure)]
    if clear_session:
        cookies.append(web.set_cookie(signin.SESSION_COOKIE, "", 0, secure))
    return web.redirect(location, cookies)


def links_page(rt: Runtime, event: HttpRequest, action: str) -> dict:
    services, sign_in, keys = rt.services, rt.sign_in, rt.keys
    settings = services.settings
    api_url, secure = settings.api_url, settings.api_url.startswith("https://")
    token = event.query_value("token")
    view = "report" if event.query_value("view") == "report" else ""
    return_to = f"/links/{action}?token={quote(token)}" + (f"&view={view}" if view else "")
    try:
        link = decisions.read_link(services, token, action)  # bad links are refused before any sign-in
        if event.query_value("signin") == "switch":  # forget this session; the IdP asks who is there
            return _sign_in(rt, return_to, secure, prompt="login", clear_session=True)
        approver = signin.session_approver(sign_in, keys, web.session_cookie(web.read_cookies(event.headers), secure))
    except decisions.DecisionRefused as refused:
        return _refused(rt, refused)
    except signin.IdentityProviderUnavailable as error:
        return _idp_unavailable(rt, error)
    except signin.NotSignedIn:
        return _sign_in(rt, return_to, secure)
    group = link.model_package_group
    logger.append_keys(model_package_group=group, model_package_arn=link.model_package_arn, action=action)
    frame = _frame(rt, group)
    threshold = settings.model(group).metric_threshold  # read_link refused groups this environment does not serve
    try:
        if view == "report":
            report = decisions.report(services, link, approver)
            return web.html_response(200, pages.report_page(report, api_url, token, frame, threshold))
        outcome = decisions.done(services, link, approver)
        if outcome is not None:
            return web.html_response(200, pages.result(outcome, frame))
        review = decisions.review(services, link, token, approver)
    except decisions.DecisionRefused as refused:
        return _refused(rt, refused, token, action, group)
    return web.html_response(200, pages.confirmation(review, api_url, frame, threshold))


def decide(rt: Runtime, event: HttpRequest, action: str) -> dict:
    services, sign_in, keys = rt.services, rt.sign_in, rt.keys
    api_url, secure = services.settings.api_url, services.settings.api_url.startswith("https://")
    frame = _frame(rt)
    if not web.same_origin(event.headers, api_url):
        message = "Decisions can only be posted from ModelGate's own confirmation page."
        return web.html_response(403, pages.refusal("Refused", message, reason="csrf", frame=frame))
    try:
        form = web.read_form(event.body, event.is_base64_encoded)
    except (ValueError, UnicodeDecodeError):
        return web.html_response(400, pages.refusal("Bad request", "The form could not be read.", frame=frame))
    try:
        approver = signin.session_approver(sign_in, keys, web.session_cookie(web.read_cookies(event.headers), secure))
    except signin.NotSignedIn:
        message = "Your session has expired before the decision was sent."
        return web.html_response(
            401, pages.refusal("Please sign in again", message, reason="session_expired", frame=frame)
        )
    except signin.IdentityProviderUnavailable as error:
        return _idp_unavailable(rt, error)
    token = form.get("token", "")
    group = None
    try:
        link = decisions.read_link(services, token, action)
        group = link.model_package_group
        logger.append_keys(model_package_group=group, model_package_arn=link.model_package_arn, action=action)
        outcome = decisions.decide(services, link, approver, form.get("csrf"), form.get("reason", ""))
    except decisions.DecisionRefused as refused:
        return _refused(rt, refused, token, action, group)
    except decisions.ApplyFailed as failed:
        logger.exception("decision committed but not applied", extra={"decision_id": failed.decision.decision_id})
        minutes = decisions.RESUME_AFTER_SECONDS // 60 + 1
        message = (
            f"Your decision ({failed.decision.state.lower()}) is recorded, but updating the model registry or "
            "Parameter Store failed."
        )
        step = f"Open the link from the e-mail again in {minutes} minutes to finish it."
        page = pages.refusal("Recorded, not yet applied", message, frame=frame, next_step=step, changed_nothing=False)
        return web.html_response(500, page)
    decision = outcome.decision
    logger.info(
        "decided",
        extra={
            "model_version": decision.model_version,
            "state": decision.state,
            "decided_by": decision.decided_by,
            "decision_id": decision.decision_id,
            "resumed": outcome.resumed,
            "repeated": outcome.repeated,
            "approvals": len(outcome.approvers),
            "quorum": outcome.quorum,
        },
    )
    # Post-redirect-get: the browser lands on the link's GET page, which now shows this decision; reloading or
    # going back never resubmits the form nor shows a live button for a decision already taken.
    return web.redirect(pages.link_url(api_url, action, token), status=303)


def callback(rt: Runtime, event: HttpRequest) -> dict:
    services, sign_in, keys = rt.services, rt.sign_in, rt.keys
    api_url, secure = services.settings.api_url, services.settings.api_url.startswith("https://")
    if event.query_value("error"):
        message = f"The identity provider said: {event.query_value('error')}."
        step = "Open the link from the e-mail again to retry the sign-in."
        return web.html_response(400, pages.refusal("Sign-in failed", message, frame=_frame(rt), next_step=step))
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
        step = "Open the link from the e-mail again to retry the sign-in."
        return web.html_response(400, pages.refusal("Sign-in failed", str(error), frame=_frame(rt), next_step=step))
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
            message = f"There is no '{action}' action."
            page = pages.refusal("Not found", message, frame=_frame(rt), next_step="Use a link from the e-mail.")
            return web.html_response(404, page)
        if method in ("GET", "HEAD"):
            page = links_page(rt, request, action)
            return {**page, "body": ""} if method == "HEAD" else page  # RFC 9110 9.3.2: GET's headers, no body
        if method == "POST":
            return decide(rt, request, action)
        page = pages.refusal(
            "Method not allowed",
            f"{method} cannot be used here.",
            frame=_frame(rt),
            next_step="Open the link from the e-mail in a browser.",
        )
        response = web.html_response(405, page)
        response["headers"]["Allow"] = "GET, HEAD, POST"
        return response
    if resource == "/auth/callback" and method == "GET":
        return callback(rt, request)
    page = pages.refusal(
        "Not found", "There is no such page.", frame=_frame(rt), next_step="Use a link from the e-mail."
    )
    return web.html_response(404, page)


@logger.inject_lambda_context(clear_state=True)  # no keys leak between invocations
def handler(event: dict, context: object) -> dict:
    rt = runtime()
    logger.append_keys(**rt.services.settings.log_keys())
    return route(rt, event)
