"""The approval API's HTML pages: confirmation (GET), result (after a decision), report, refusal. No scripts.

Responses carry a strict Content-Security-Policy, no caching, and `Referrer-Policy: same-origin` (the link's
token is in the URL and must not leak to other sites; `no-referrer` would also make browsers send `Origin: null`
with the page's own form POST, which the decision endpoint rightly refuses). The report page's plot is a
`data:` image (the only image source allowed): the PNG is read from S3 by the Lambda, nothing is fetched from
elsewhere.

Layout: the verdict and the decision form come first (the Approve button is on the first screen of a laptop),
details after; nothing is wider than a phone (long ARNs and URIs wrap, words and numbers do not).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from urllib.parse import quote

from modelgate.approval.decisions import Outcome, ReportView, Review, progress_text
from modelgate.approval.evaluation_view import EvaluationSummary, state_words, summarize, version_facts, when
from modelgate.approval.links import APPROVE
from modelgate.registry import APPROVED, PENDING

SECURITY_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
}
_STYLE = (
    "*{box-sizing:border-box}body{margin:0;font:16px/1.45 system-ui,sans-serif;color:#1f2328;background:#f6f8fa}"
    "header,footer{padding:10px 16px;color:#59636e;font-size:.9em}header{background:#24292f;color:#fff}"
    "header b{font-weight:600}main{max-width:820px;margin:0 auto;padding:4px 16px 8px;background:#fff}"
    "footer{max-width:820px;margin:0 auto}h1{font-size:1.45em;line-height:1.25;margin:.6em 0 .3em}"
    "h2{font-size:1.1em;margin:1.4em 0 .4em}table{border-collapse:collapse;width:100%}"
    "th{text-align:left;padding:4px 10px 4px 0;vertical-align:top;font-weight:600}.kv th{width:32%}"
    "td{padding:4px 0;vertical-align:top}td small,.note{color:#59636e}"
    ".long{overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:.85em}"
    ".num{text-align:right;padding-right:10px;font-variant-numeric:tabular-nums}td.num{white-space:nowrap}"
    ".verdict{padding:10px 12px;border-left:4px solid #1a7f37;background:#dafbe1;margin:.6em 0}"
    ".verdict.warn{border-color:#bf8700;background:#fff8c5}"
    ".does{margin:.4em 0}.does li{margin:.15em 0}"
    "button,.button{font-size:1.05em;padding:10px 20px;border:0;color:#fff;cursor:pointer;border-radius:6px;"
    "text-decoration:none;display:inline-block}"
    ".approve{background:#1a7f37}.reject{background:#cf222e}"
    "textarea{width:100%;min-height:3.2em;font:inherit}label{font-weight:600}"
    ".refused{border-left:4px solid #cf222e;padding:2px 12px;margin:.6em 0}.done{border-left-color:#1a7f37}"
    "img{max-width:100%;height:auto}"
)


def _e(value: object) -> str:
    return html.escape(str(value))


@dataclass(frozen=True)
class Frame:
    """What the header and footer say: which product, project, environment and model, who decides here; and the
    promotion chain the pages word "next" with."""

    project: str = "modelgate"
    environment: str = ""
    approvers_group: str = ""
    chain: tuple[str, ...] = ()
    model: str = ""  # the model's name (header), when the page is about one

    @classmethod
    def of(cls, settings, model=None) -> Frame:  # ApprovalSettings, ModelApproval (pages import no settings)
        return cls(
            settings.project,
            settings.environment,
            model.approvers_group if model is not None else "",
            tuple(settings.chain),
            model.model if model is not None else "",
        )

    def next(self, environment: str) -> str | None:
        """The environment after `environment` in the chain, None after the last (or outside the chain)."""
        if environment not in self.chain:
            return None
        index = self.chain.index(environment)
        return self.chain[index + 1] if index + 1 < len(self.chain) else None


def model_label(model: str, group: str) -> str:
    """How pages and e-mails name a model: its config name, and its registry group when that differs."""
    return group if not model or model == group else f"{model} ({group})"


def _page(title: str, body: str, frame: Frame) -> str:
    where = (f" &middot; {_e(frame.model)}" if frame.model else "") + (
        f" &middot; {_e(frame.environment)}" if frame.environment else ""
    )
    who = (
        f"Decisions for {_e(frame.environment)} are taken by members of the "
        f"&lsquo;{_e(frame.approvers_group)}&rsquo; group. "
        if frame.approvers_group
        else ""
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)} - ModelGate</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>'
        f"<body><header><b>ModelGate</b> model approvals &middot; {_e(frame.project)}{where}</header>"
        f"<main><h1>{_e(title)}</h1>{body}</main>"
        f"<footer>{who}Questions about this model: ask whoever registered it. Problems with this page: your "
        "platform team.</footer></body></html>"
    )


def _table(rows: list[tuple[str, str]], table_id: str = "", long: tuple[str, ...] = ()) -> str:
    """Rows of (label, value); values are escaped; labels in `long` get wrapping monospace (ARNs, URIs)."""
    cells = "".join(f"<tr><th>{_e(a)}</th><td{' class=long' if a in long else ''}>{_e(b)}</td></tr>" for a, b in rows)
    return f'<table class="kv" id="{table_id}">{cells}</table>' if table_id else f'<table class="kv">{cells}</table>'


def _metrics(summary: EvaluationSummary) -> str:
    cells = "".join(
        f"<tr><th>{_e(line.label)}</th><td>{_e(line.value)}"
        + (f"<br><small>{_e(line.detail)}</small>" if line.detail else "")
        + "</td></tr>"
        for line in summary.lines
    )
    return f'<table class="kv" id="metrics">{cells}</table>'


def _worse_table(rows, table_id: str) -> str:
    head = (
        '<tr><th>Customer</th><th class="num">Model MAPE</th><th class="num">Baseline MAPE</th>'
        '<th class="num">Ratio</th></tr>'
    )
    body = "".join(
        f'<tr><td>{_e(w.customer)}</td><td class="num">{_e(w.model_mape)}</td>'
        f'<td class="num">{_e(w.baseline_mape)}</td><td class="num">{_e(w.ratio)}</td></tr>'
        for w in rows
    )
    return f'<table id="{table_id}">{head}{body}</table>'


def link_url(api_url: str, action: str, token: str, **extra: str) -> str:
    query = "".join(f"&{k}={quote(v)}" for k, v in extra.items())
    return f"{api_url}/links/{action}?token={quote(token)}{query}"


def _consequences(
    environment: str, action: str, serving_version: int | None, frame: Frame, group: str, quorum_note: str = ""
) -> str:
    """What the decision does, in plain words (both options, so the approver sees the alternative)."""
    following, project = frame.next(environment), frame.project
    now = (
        f"{environment} serves version {serving_version} now."
        if serving_version is not None
        else f"No version is approved for {environment} yet."
    )
    approve = (
        f"<b>Approve</b>: {_e(quorum_note)}{_e(environment)}'s endpoint is switched to this version (Parameter Store "
        f"<span class=long>/{_e(project)}/{_e(group)}/{_e(environment)}</span>); "
        + (
            f"after its batch inference in {_e(environment)}, the {_e(following)} approvers are asked to promote it."
            if following
            else f"{_e(environment)} is the last environment."
        )
    )
    keep = (
        f"{_e(environment)} keeps serving version {serving_version}"
        if serving_version is not None
        else f"nothing is deployed to {_e(environment)}"
    )
    reject = f"<b>Reject</b> (needs a reason): this version goes no further; {keep}."
    first, second = (approve, reject) if action == APPROVE else (reject, approve)
    return f'<p class="does">{_e(now)}</p><ul class="does"><li>{first}</li><li>{second}</li></ul>'


def confirmation(review: Review, api_url: str, frame: Frame = Frame(), threshold: float | None = None) -> str:
    link, version, model = review.link, review.version, review.model
    verb = "Approve" if link.action == APPROVE else "Reject"
    env = link.environment
    title = f"{verb} {model_label(model.model, version.group)} version {version.version} for {env}?"
    counted = review.approvals
    quorum_note = ""
    if model.quorum > 1:
        missing = model.quorum - counted.count
        quorum_note = f"{env} needs {model.quorum} distinct approvers; " + (
            "yours completes the quorum and "
            if missing <= 1
            else f"yours is counted ({missing - 1} more after you); then "
        )
    summary = summarize(review.evaluation, threshold)
    report_url = link_url(api_url, link.action, review.token, view="report")
    body = [
        f"<p>Registered by {_e(version.registered_by or 'unknown')} on {_e(when(version.created_at))}"
        + (
            f"; approved in {_e(review.request_details.get('source'))} and asked for by the inference run there"
            if review.request_details.get("source")
            else ""
        )
        + ".</p>",
        f'<div id="verdict" class="verdict{" warn" if summary.warning else ""}">{_e(summary.headline)}'
        + (
            " Also worse: "
            + ", ".join(
                f"{_e(w.customer)} ({_e(w.model_mape)} vs {_e(w.baseline_mape)})" for w in summary.regressed[1:3]
            )
            + ("; more below." if len(summary.regressed) > 3 else ".")
            if len(summary.regressed) > 1
            else ""
        )
        + f' <a href="{_e(report_url)}">Full report</a></div>',
        _consequences(
            env, link.action, review.serving.model_version if review.serving else None, frame, version.group,
            quorum_note,
        ),
    ]  # fmt: skip
    if model.quorum > 1:
        progress = progress_text(counted.count, model.quorum, counted.approvers) if counted.count else (
            f"0 of {model.quorum} approvals so far"
        )  # fmt: skip
        body.insert(2, f'<p id="quorum"><b>Approvals:</b> {_e(progress)}.</p>')
    reason = (
        '<p><label for="reason">Reason (required)</label><br><textarea id="reason" name="reason" required '
        'maxlength="1000"></textarea></p>'
        if link.action != APPROVE
        else '<p><label for="reason">Comment (optional)</label><br><textarea id="reason" name="reason" '
        'maxlength="1000"></textarea></p>'
    )
    body.append(
        f'<form method="post" action="{_e(api_url)}/links/{_e(link.action)}">'
        f'<input type="hidden" name="token" value="{_e(review.token)}">'
        f'<input type="hidden" name="csrf" value="{_e(review.csrf)}">{reason}'
        f'<button id="confirm" class="{_e(link.action)}" type="submit">{verb} version {version.version} '
        f"for {_e(env)}</button></form>"
    )
    switch_url = link_url(api_url, link.action, review.token, signin="switch")
    body.append(
        f'<p class="note" id="signed-in">Signed in as {_e(review.approver.display)} '
        f'(<a href="{_e(switch_url)}">sign in as someone else</a>). Nothing has changed yet: the decision is '
        "recorded only when you confirm.</p>"
    )
    body.append("<h2>Evaluation</h2>")
    body.append(_metrics(summary))
    if summary.note:
        body.append(f'<p class="note">{_e(summary.note)}</p>')
    if summary.regressed:
        more = len(summary.regressed) - len(summary.regressed_shown)
        body.append(f"<h2>Customers worse than the baseline ({len(summary.regressed)})</h2>")
        body.append(_worse_table(summary.regressed_shown, "regressed"))
        if more:
            body.append(f'<p class="note">{more} more on the <a href="{_e(report_url)}">full report</a>.</p>')
    if review.request_details.get("run") or review.run_metrics:
        body.append("<h2>Inference run</h2>")
        rows = [("Run", review.request_details.get("run", "")), ("In", review.request_details.get("source", ""))]
        body.append(_table([row for row in rows if row[1]] + list(review.run_metrics), "run", long=("Run",)))
    states = ", ".join(f"{e}: {state_words(version.state(e))}" for e in frame.chain)
    facts = [
        ("Model", model_label(model.model, version.group)),
        *version_facts(version),
        ("State per environment", states),
        ("Serving now", f"version {review.serving.model_version}" if review.serving else review.serving_note or "none"),
        ("Model package", version.arn),
        ("Model data", version.model_data_url or "none"),
    ]
    body.append("<h2>Model version</h2>")
    body.append(_table(facts, "model", long=("Model package", "Model data")))
    return _page(title, "".join(body), frame)


def result(outcome: Outcome, frame: Frame = Frame()) -> str:
    decision = outcome.decision
    approved = decision.state == APPROVED
    counted_only = decision.state == PENDING  # an approval towards the quorum: the version has not moved yet
    verb = "approved" if approved else "rejected"
    env = decision.to_environment
    label = model_label(decision.model, decision.model_package_group)
    title = f"{label} version {decision.model_version} {verb} for {env}"
    noun = "approval" if approved or counted_only else "rejection"
    following = frame.next(env)
    progress = outcome.progress()
    if counted_only:
        missing = outcome.quorum - len(outcome.approvers)
        title = f"Your approval of {label} version {decision.model_version} for {env} is counted"
        then = (
            f"{progress}. {missing} more approver{'s' if missing != 1 else ''} needed before version "
            f"{decision.model_version} moves into {env}; they have their own links."
            if missing > 0
            else f"{progress}: the quorum is complete."
        )
    elif approved:
        then = f"{env}'s serving stack deploys version {decision.model_version} to its endpoint" + (
            f"; after batch inference there, the {following} approvers are asked to promote it." if following else "."
        )
    else:
        then = f"Version {decision.model_version} is not deployed to {env} and goes no further."
    rows = [
        ("Model", label),
        ("Decision", "Approval counted" if counted_only else verb.capitalize()),
        ("By", decision.decided_by),
        ("At", when(decision.decided_at)),
        ("Environment", env),
    ]
    if progress and not counted_only:
        rows.append(("Approvals", progress))
    if decision.from_environment in frame.chain:
        rows.append(("Promoted from", decision.from_environment))
    if decision.reason:
        rows.append(("Comment" if approved or counted_only else "Reason", decision.reason))
    if outcome.parameter:
        rows.append(("Parameter Store", outcome.parameter))
    body = (
        f'<div id="result" class="refused done"><p>Your {noun} was recorded at {_e(when(decision.decided_at))}. '
        f"{_e(then)}</p>{_table(rows, long=('Parameter Store',))}</div>"
        '<p class="note">Nothing more to do; you can close this page. Opening the link again shows this page.</p>'
    )
    return _page(title, body, frame)


def report_page(view: ReportView, api_url: str, token: str, frame: Frame = Frame(), threshold: float | None = None):
    version = view.version
    summary = summarize(view.evaluation, threshold)
    title = f"Evaluation of {model_label(view.model.model, version.group)} version {version.version}"
    back = link_url(api_url, view.link.action, token)
    body = [
        f'<div id="verdict" class="verdict{" warn" if summary.warning else ""}">{_e(summary.headline)}</div>',
        f'<p><a href="{_e(back)}">Back to the decision</a></p>',
        _metrics(summary),
    ]
    if summary.note:
        body.append(f'<p class="note">{_e(summary.note)}</p>')
    if view.plot_png:
        encoded = base64.b64encode(view.plot_png).decode()
        body.append("<h2>Forecasts of the worst, best and median customers</h2>")
        body.append(f'<img id="plot" alt="forecast vs actual readings" src="data:image/png;base64,{encoded}">')
    if summary.ranked:
        worse = {w.customer for w in summary.regressed}
        body.append(f"<h2>Every customer ({len(summary.ranked)}), worst first</h2>")
        head = (
            '<tr><th>Customer</th><th class="num">Model MAPE</th><th class="num">Baseline MAPE</th>'
            '<th class="num">Ratio</th></tr>'
        )
        rows = "".join(
            f"<tr><td>{_e(w.customer)}{' &#9888;' if w.customer in worse else ''}</td>"
            f'<td class="num">{_e(w.model_mape)}</td><td class="num">{_e(w.baseline_mape)}</td>'
            f'<td class="num">{_e(w.ratio)}</td></tr>'
            for w in summary.ranked
        )
        body.append(f'<table id="customers">{head}{rows}</table>')
    return _page(title, "".join(body), frame)


# What a person can do next after each refusal (DecisionRefused.reason); the page always offers one.
_NEXT_STEPS = {
    "not_approver": "Sign in as someone who is, or forward the decision to a member of that group.",
    "registrant": "Sign in as someone else, or ask another approver to decide; you may still reject it.",
    "already_approved": "Nothing more for you to do: ask another approver to open their own link.",
    "unknown_group": "Open the link from the e-mail exactly as it is, or ask your platform team which environment "
    "serves this model (its approvers receive their own links).",
    "replayed": "Each link works once. Opened by the person who used it, it shows what they decided.",
    "already_decided": "Nothing more to do here: `modelgate status <group>` shows every environment's state.",
    "expired": "Ask an operator to run the command above; the new e-mail has fresh links.",
    "forged": "Open the link exactly as it is in the e-mail (some mail programs break long links).",
    "malformed": "Open the link exactly as it is in the e-mail (some mail programs break long links).",
    "wrong_environment": "Open the link from the e-mail for that environment.",
    "wrong_action": "Use the other button of the same e-mail.",
    "recipient_removed": "Ask your platform team to add you to this environment's approvers.emails.",
    "csrf": "Open the link from the e-mail again and confirm from that page.",
    "reason_required": "Go back, write a reason, and reject again.",
    "in_progress": "Reload this page in a minute.",
    "session_expired": "Open the link from the e-mail again; you will be asked to sign in.",
    "unverified_identity": "Verify your e-mail address with your identity provider (or ask its administrator to), "
    "then open the link from the e-mail again, or sign in as someone whose e-mail is verified.",
    "registrant_unknown": "Ask a platform administrator to record who registered it (`modelgate set-registrant "
    "--model GROUP --version N --email ADDRESS`), then open the link again. You may still reject it.",
}
_SWITCH = frozenset({"not_approver", "registrant", "unverified_identity"})


def refusal(
    title: str,
    message: str,
    *,
    reason: str = "",
    frame: Frame = Frame(),
    switch_url: str | None = None,
    next_step: str | None = None,
    changed_nothing: bool = True,
) -> str:
    step = next_step or _NEXT_STEPS.get(reason) or "If this keeps happening, tell your platform team what you did."
    switch = (
        f' <a id="switch" href="{_e(switch_url)}">Sign in as someone else</a>'
        if switch_url and reason in _SWITCH
        else ""
    )
    return _page(
        title,
        f'<div id="refused" class="refused"><p>{_e(message)}</p></div>'
        f'<p id="next"><b>What now:</b> {_e(step)}{switch}</p>'
        + ('<p class="note">Nothing was changed.</p>' if changed_nothing else ""),
        frame,
    )
