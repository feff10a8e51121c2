"""Request a decision: e-mail each approver of THAT model in an environment their own approve/reject links."""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.approval import emails, links, state
from modelgate.approval.events import ApprovalRequest
from modelgate.approval.model_versions import read_evaluation, read_model_version, served_model
from modelgate.approval.registrant import RegistrantUnknown, canonical, ensure_recorded
from modelgate.approval.rules import NotEligible, check_eligible
from modelgate.approval.services import Services
from modelgate.approval.settings import ModelApproval


class RequestRefused(Exception):
    """This request cannot be e-mailed (wrong environment, not eligible, ...). Nothing was sent."""


@dataclass(frozen=True)
class RequestOutcome:
    sent: tuple[str, ...] = ()  # recipients e-mailed by this call
    already_sent: tuple[str, ...] = ()  # recipients e-mailed for this request before (a retry or duplicate)
    not_requested: str | None = None  # why nothing was sent although the request was valid
    not_mailed: tuple[str, ...] = ()  # approvers who cannot decide on this version (its registrant)


def request_key(request: ApprovalRequest, model: ModelApproval) -> str:
    return state.request_key_of(model.group, request.model_package_arn, request.environment, request.request_id)


def request_approval(request: ApprovalRequest, services: Services) -> RequestOutcome:
    """E-mail the approvers of the request's model. ForeignModelPackage for a group this platform does not serve."""
    settings = services.settings
    if request.environment != settings.environment:
        raise RequestRefused(
            f"request is for {request.environment}, but this is the {settings.environment} approval service"
        )
    expected_source = settings.chain.previous(request.environment)
    if request.source_environment != expected_source:
        raise RequestRefused(
            f"a request for {request.environment} must come from {expected_source or 'the registry'}, "
            f"not {request.source_environment or 'the registry'}"
        )
    model = served_model(settings, request.model_package_arn)
    if request.environment == settings.chain.first:
        # The registry account: record who really registered the version before anyone is asked to approve it.
        try:
            ensure_recorded(
                services.sagemaker,
                request.model_package_arn,
                account=settings.registry_account,
                region=settings.registry_region,
            )
        except RegistrantUnknown as unknown:
            raise RequestRefused(str(unknown)) from None
    version = read_model_version(services.sagemaker, request.model_package_arn)
    try:
        check_eligible(version, request.environment, settings.chain)
    except NotEligible as problem:
        if problem.reason == "already_decided":
            return RequestOutcome(not_requested=str(problem))
        raise RequestRefused(str(problem)) from None

    evaluation = read_evaluation(services.s3, version.metrics_uri)
    key = request_key(request, model)
    details = {
        "requested_by": request.requested_by,
        "run": request.run or "",
        "source": request.source_environment or "",
    }
    state.save_request(
        services.dynamodb,
        settings.state_table,
        key,
        details=details,
        metrics=list(request.metrics),
        now=services.epoch(),
    )
    sent, already, not_mailed = [], [], []
    registrant = canonical(version.registered_by or "")
    for recipient in model.approver_emails:
        if (
            registrant and canonical(recipient) == registrant
        ):  # may not approve their own version: no link to mislead them
            not_mailed.append(recipient)
            continue
        now = services.epoch()
        claim = state.claim_email(services.dynamodb, settings.state_table, key, recipient, now)
        if claim is None:
            already.append(recipient)
            continue
        try:
            urls = {}
            for action in links.ACTIONS:
                token, claims = links.issue(
                    services.signer,
                    request_id=request.request_id,
                    model_package_group=model.group,
                    model_package_arn=version.arn,
                    environment=request.environment,
                    action=action,
                    recipient=recipient,
                    now=now,
                    ttl_seconds=model.link_ttl_seconds,
                )
                urls[action] = emails.link_url(settings.api_url, action, token)
            message = emails.render(
                version=version,
                request=request,
                recipient=recipient,
                evaluation=evaluation,
                approve_url=urls[links.APPROVE],
                reject_url=urls[links.REJECT],
                expires_at=claims.expires_at,
                report_url=f"{urls[links.APPROVE]}&view=report",
                threshold=model.metric_threshold,
                approvers_group=model.approvers_group,
                model=model,
                chain=settings.chain,
                progress=state.approvals(
                    services.dynamodb, settings.state_table, model.group, version.version, request.environment
                ),
            )
            message_id = emails.send(services.ses, message, settings.sender_email)
        except BaseException:
            state.release_email(services.dynamodb, settings.state_table, key, recipient, claim)
            raise
        state.email_sent(services.dynamodb, settings.state_table, key, recipient, claim, message_id)
        sent.append(recipient)
    return RequestOutcome(sent=tuple(sent), already_sent=tuple(already), not_mailed=tuple(not_mailed))
