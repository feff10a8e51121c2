"""The approval e-mail: one per recipient, HTML + plain text, with that recipient's own approve/reject links.

Sent as a raw MIME message through SES (SendRawEmail), so both parts travel as written.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from modelgate.approval.evaluation_view import summarize, version_facts, when
from modelgate.approval.events import ApprovalRequest
from modelgate.approval.model_versions import Evaluation, ModelVersion
from modelgate.approval.settings import ModelApproval
from modelgate.approval.state import Approvals
from modelgate.chain import Chain


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


def label(model: ModelApproval | None, group: str) -> str:
    """The model's config name, and its registry group when that differs (as the pages name it)."""
    return group if model is None or model.model == group else f"{model.model} ({group})"


def subject(version: ModelVersion, request: ApprovalRequest, model: ModelApproval | None = None) -> str:
    name = label(model, version.group)
    if request.source_environment:
        return (
            f"[ModelGate] Promote {name} v{version.version} from {request.source_environment} to {request.environment}?"
        )
    return f"[ModelGate] Approve {name} v{version.version} for {request.environment}?"


def render(
    *,
    version: ModelVersion,
    request: ApprovalRequest,
    recipient: str,
    evaluation: Evaluation,
    approve_url: str,
    reject_url: str,
    expires_at: int,
    report_url: str | None = None,
    threshold: float | None = None,
    approvers_group: str = "",
    model: ModelApproval | None = None,
    chain: Chain | None = None,
    progress: Approvals | None = None,
) -> ApprovalEmail:
    summary = summarize(evaluation, threshold)
    env = request.environment
    quorum = model.quorum if model is not None else 1
    facts = [("Model", label(model, version.group)), *version_facts(version), ("Target environment", env)]
    if quorum > 1:
        counted = progress or Approvals()
        facts.append(
            (
                "Approvals needed",
                f"{quorum} distinct approvers; {counted.count} so far"
                + (f" ({', '.join(counted.approvers)})" if counted.approvers else ""),
            )
        )
    if request.source_environment:
        facts.append(("Approved and run in", request.source_environment))
    facts.append(("Requested by", request.requested_by))
    if request.run:
        facts.append(("Inference run", request.run))
    facts.append(("Model data", version.model_data_url or "none"))
    heading = subject(version, request, model).removeprefix("[ModelGate] ")
    following = chain.next(env) if chain is not None and env in chain else None
    does = (
        (
            f"Once {quorum} approvers have approved, version {version.version} is deployed"
            if quorum > 1
            else f"Approving deploys version {version.version}"
        )
        + f" to {env}'s endpoint"
        + (f"; the {following} approvers are asked next, after batch inference in {env}." if following else ".")
        + f" Rejecting (with a reason) keeps it out of {env} and stops its promotion."
    )
    who = f"members of the '{approvers_group}' group" if approvers_group else "members of the approvers group"
    intro = (
        "Each link opens a confirmation page (it changes nothing by itself). You will be asked to sign in; "
        f"only {who} can decide, and not the person who registered the model. "
        f"The links are yours alone, work once, and expire at {when(expires_at)}."
    )
    worst = summary.regressed_shown

    text_lines = [heading, "", summary.headline, "", *(f"{name}: {value}" for name, value in facts), ""]
    if summary.lines:
        text_lines += [
            "Evaluation:",
            *(f"  {line.label}: {line.value}" + (f" ({line.detail})" if line.detail else "") for line in summary.lines),
        ]
    if worst:
        text_lines += [
            f"Customers worse than the baseline ({len(summary.regressed)}), worst first:",
            *(f"  {w.customer}: MAPE {w.model_mape} vs baseline {w.baseline_mape} (ratio {w.ratio})" for w in worst),
        ]
    if summary.note:
        text_lines.append(f"  ({summary.note})")
    if report_url:
        text_lines.append(f"Full report (every customer, forecast plot): {report_url}")
    if request.metrics:
        text_lines += ["", "Inference run metrics:", *(f"  {name}: {value}" for name, value in request.metrics)]
    text_lines += ["", does, "", f"Approve: {approve_url}", f"Reject:  {reject_url}", "", intro]

    def table(rows: list[tuple[str, str]]) -> str:
        cells = "".join(
            f'<tr><th style="text-align:left;padding:2px 12px 2px 0;vertical-align:top">{html.escape(a)}</th>'
            f"<td>{html.escape(b)}</td></tr>"
            for a, b in rows
        )
        return f"<table>{cells}</table>"

    colour = "#fff8c5;border-left:4px solid #bf8700" if summary.warning else "#dafbe1;border-left:4px solid #1a7f37"
    parts = [
        f"<h2>{html.escape(heading)}</h2>",
        f'<p style="padding:8px 12px;background:{colour}">{html.escape(summary.headline)}</p>',
    ]
    button = (
        "display:inline-block;padding:10px 18px;margin:0 12px 8px 0;color:#fff;text-decoration:none;border-radius:6px"
    )
    buttons = (
        f'<p><a href="{html.escape(approve_url)}" style="{button};background:#1a7f37">Approve</a>'
        f'<a href="{html.escape(reject_url)}" style="{button};background:#cf222e">Reject</a></p>'
    )
    parts += [f"<p>{html.escape(does)}</p>", buttons, table(facts)]
    if summary.lines:
        parts.append("<h3>Evaluation</h3>")
        parts.append(
            table(
                [(line.label, f"{line.value}" + (f" ({line.detail})" if line.detail else "")) for line in summary.lines]
            )
        )
    if worst:
        parts.append(f"<h3>Customers worse than the baseline ({len(summary.regressed)}), worst first</h3>")
        parts.append(
            table([(w.customer, f"MAPE {w.model_mape} vs {w.baseline_mape} (ratio {w.ratio})") for w in worst])
        )
    if summary.note:
        parts.append(f"<p><em>{html.escape(summary.note)}</em></p>")
    if report_url:
        parts.append(
            f'<p><a href="{html.escape(report_url)}">Full report: every customer and the forecast plot</a></p>'
        )
    if request.metrics:
        parts += ["<h3>Inference run metrics</h3>", table(list(request.metrics))]
    parts.append(f"<p>{html.escape(intro)}</p>")
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"></head>'
        "<body style='font-family:sans-serif;max-width:680px'>" + "".join(parts) + "</body></html>"
    )
    return ApprovalEmail(
        recipient=recipient,
        subject=subject(version, request, model),
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
