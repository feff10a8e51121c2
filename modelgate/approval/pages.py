"""The approval API's HTML pages: confirmation (GET), result (POST), refusal (either). No scripts at all.

Responses carry a strict Content-Security-Policy, no caching, and `Referrer-Policy: same-origin` (the link's
token is in the URL and must not leak to other sites; `no-referrer` would also make browsers send `Origin: null`
with the page's own form POST, which the decision endpoint rightly refuses).
"""

from __future__ import annotations

import html
from datetime import UTC

from modelgate.approval.decisions import Outcome, Review
from modelgate.approval.links import APPROVE
from modelgate.environments import ENVIRONMENTS
from modelgate.registry import STARTED_BY_KEY

SECURITY_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#1f2328}"
    "th{text-align:left;padding:3px 14px 3px 0;vertical-align:top}td{padding:3px 0;word-break:break-all}"
    "button{font-size:1.05em;padding:8px 18px;border:0;color:#fff;cursor:pointer}"
    ".approve{background:#1a7f37}.reject{background:#cf222e}.note{color:#59636e}"
    "textarea{width:100%;min-height:5em}.refused{border-left:4px solid #cf222e;padding-left:12px}"
)


def _e(value: object) -> str:
    return html.escape(str(value))


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)} - ModelGate</title>'
        f'<meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head>'
        f"<body><h1>{_e(title)}</h1>{body}</body></html>"
    )


def _table(rows: list[tuple[str, str]], table_id: str = "") -> str:
    cells = "".join(f"<tr><th>{_e(a)}</th><td>{_e(b)}</td></tr>" for a, b in rows)
    return f'<table id="{table_id}">{cells}</table>' if table_id else f"<table>{cells}</table>"


def confirmation(review: Review, api_url: str) -> str:
    link, version = review.link, review.version
    verb = "Approve" if link.action == APPROVE else "Reject"
    title = f"{verb} {version.group} version {version.version} for {link.environment}?"
    facts = [
        ("Model package group", version.group),
        ("Version", str(version.version)),
        ("Created", version.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("Registered by", version.registered_by or "unknown"),  # typed when the run started
        ("Started by (AWS principal)", version.metadata.get(STARTED_BY_KEY) or "not recorded"),
        ("Model package", version.arn),
        ("Model data", version.model_data_url or "none"),
        ("Target environment", link.environment),
        ("States", ", ".join(f"{env}: {version.state(env)}" for env in ENVIRONMENTS)),
    ]
    body = [_table(facts, "model")]
    if review.evaluation:
        body.append("<h2>Evaluation metrics</h2>")
        body.append(_table([(name, f"{value:.6g}") for name, value in review.evaluation], "metrics"))
    if review.evaluation_note:
        body.append(f'<p class="note">{_e(review.evaluation_note)}</p>')
    if review.request_details.get("run") or review.run_metrics:
        body.append("<h2>Inference run</h2>")
        rows = [("Run", review.request_details.get("run", "")), ("In", review.request_details.get("source", ""))]
        body.append(_table([row for row in rows if row[1]] + list(review.run_metrics), "run"))
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
        f"for {_e(link.environment)}</button></form>"
    )
    body.append(
        f'<p class="note">Signed in as {_e(review.approver.display)}. Nothing has changed yet: the decision is '
        "recorded only when you confirm.</p>"
    )
    return _page(title, "".join(body))


def result(outcome: Outcome) -> str:
    decision = outcome.decision
    verb = "approved" if decision.action == APPROVE else "rejected"
    title = f"{decision.model_package_group} version {decision.model_version} {verb} for {decision.to_environment}"
    rows = [
        ("Decision", decision.state),
        ("By", decision.decided_by),
        ("At", decision.decided_at),
        ("Environment", decision.to_environment),
        ("Previously approved in", decision.from_environment),
    ]
    if decision.reason:
        rows.append(("Reason", decision.reason))
    if outcome.parameter:
        rows.append(("Parameter Store", outcome.parameter))
    rows.append(("History entry", decision.decision_id))
    return _page(title, f'<div id="result">{_table(rows)}</div><p class="note">You can close this page.</p>')


def refusal(title: str, message: str) -> str:
    return _page(title, f'<div id="refused" class="refused"><p>{_e(message)}</p></div>')
