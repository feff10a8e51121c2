"""The approval e-mail: one per recipient, HTML + plain text, with that recipient's own approve/reject links.

Sent as a raw MIME message through SES (SendRawEmail), so both parts travel as written.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from modelgate.approval.events import ApprovalRequest
from modelgate.approval.model_versions import ModelVersion
from modelgate.registry import STARTED_BY_KEY


@dataclass(frozen=True)
class ApprovalEmail:
    recipient: str
    subject: str
    text: str
    html: str
    approve_url: str
    reject_url: str


def link_url(api_url: str, action: str, token: str) -> str:
    return f"{api_url}/links/{action}?token={token}"


def _when(moment: datetime | int) -> str:
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def subject(version: ModelVersion, request: ApprovalRequest) -> str:
    if request.source_environment:
        return (
            f"[ModelGate] Promote {version.group} v{version.version} "
            f"from {request.source_environment} to {request.environment}?"
        )
    return f"[ModelGate] Approve {version.group} v{version.version} for {request.environment}?"


def render(
    *,
    version: ModelVersion,
    request: ApprovalRequest,
    recipient: str,
    evaluation: list[tuple[str, float]],
    evaluation_note: str | None,
    approve_url: str,
    reject_url: str,
    expires_at: int,
) -> ApprovalEmail:
    facts: list[tuple[str, str]] = [
        ("Model package group", version.group),
        ("Version", str(version.version)),
        ("Created", _when(version.created_at)),
        ("Registered by", version.registered_by or "unknown"),  # typed when the run started
        ("Started by (AWS principal)", version.metadata.get(STARTED_BY_KEY) or "not recorded"),
        ("Model package", version.arn),
        ("Model data", version.model_data_url or "none"),
        ("Target environment", request.environment),
    ]
    if request.source_environment:
        facts.append(("Approved and run in", request.source_environment))
    facts.append(("Requested by", request.requested_by))
    if request.run:
        facts.append(("Inference run", request.run))
    heading = subject(version, request).removeprefix("[ModelGate] ")
    intro = (
        "Each link opens a confirmation page (it changes nothing by itself). You will be asked to sign in; "
        f"only members of the approvers group can decide, and not the person who registered the model. "
        f"The links are yours alone, work once, and expire at {_when(expires_at)}."
    )

    text_lines = [heading, "", *(f"{name}: {value}" for name, value in facts), ""]
    if evaluation:
        text_lines += ["Evaluation metrics:", *(f"  {name}: {value:.6g}" for name, value in evaluation)]
    if evaluation_note:
        text_lines.append(f"  ({evaluation_note})")
    if request.metrics:
        text_lines += ["", "Inference run metrics:", *(f"  {name}: {value}" for name, value in request.metrics)]
    text_lines += ["", f"Approve: {approve_url}", f"Reject:  {reject_url}", "", intro]

    def table(rows: list[tuple[str, str]]) -> str:
        cells = "".join(
            f'<tr><th style="text-align:left;padding:2px 12px 2px 0">{html.escape(a)}</th>'
            f"<td>{html.escape(b)}</td></tr>"
            for a, b in rows
        )
        return f"<table>{cells}</table>"

    parts = [f"<h2>{html.escape(heading)}</h2>", table(facts)]
    if evaluation or evaluation_note:
        parts.append("<h3>Evaluation metrics</h3>")
        parts.append(table([(name, f"{value:.6g}") for name, value in evaluation]))
        if evaluation_note:
            parts.append(f"<p><em>{html.escape(evaluation_note)}</em></p>")
    if request.metrics:
        parts += ["<h3>Inference run metrics</h3>", table(list(request.metrics))]
    button = "display:inline-block;padding:8px 16px;margin-right:12px;color:#fff;text-decoration:none"
    parts.append(
        f'<p><a href="{html.escape(approve_url)}" style="{button};background:#1a7f37">Approve</a>'
        f'<a href="{html.escape(reject_url)}" style="{button};background:#cf222e">Reject</a></p>'
    )
    parts.append(f"<p>{html.escape(intro)}</p>")
    body = "<!doctype html><html><body style='font-family:sans-serif'>" + "".join(parts) + "</body></html>"
    return ApprovalEmail(
        recipient=recipient,
        subject=subject(version, request),
        text="\n".join(text_lines) + "\n",
        html=body,
        approve_url=approve_url,
        reject_url=reject_url,
    )


def mime(message: ApprovalEmail, sender: str) -> bytes:
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = sender
    mail["To"] = message.recipient
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    mail.set_content(message.text)
    mail.add_alternative(message.html, subtype="html")
    return mail.as_bytes()


def send(ses: Any, message: ApprovalEmail, sender: str) -> str:
    """Send through SES; the SES message id."""
    return ses.send_raw_email(
        Source=sender, Destinations=[message.recipient], RawMessage={"Data": mime(message, sender)}
    )["MessageId"]
