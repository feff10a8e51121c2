"""Deciding on a link: what the confirmation page shows (GET, changes nothing) and the decision itself (POST).

Every refusal is a DecisionRefused with a stable `reason`, a title and a message for the page, and the HTTP
status; a refused request writes nothing. An accepted decision is committed in DynamoDB first (the single
point where concurrent requests are serialised, modelgate.approval.state), then applied to the registry and
Parameter Store. If applying fails, the same link (POSTed again) finishes the job instead of being "replayed".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from modelgate.approval import links, state
from modelgate.approval.history import Decision
from modelgate.approval.links import LinkClaims, LinkRefused
from modelgate.approval.model_versions import (
    Evaluation,
    ForeignModelPackage,
    ModelVersion,
    UnknownModelVersion,
    check_model_package_arn,
    read_evaluation,
    read_forecast_plot,
    read_model_version,
    write_decision,
)
from modelgate.approval.registrant import Registrant
from modelgate.approval.rules import NotEligible, check_eligible
from modelgate.approval.services import Services, iso
from modelgate.approval.signin import Approver, CsrfRejected, check_csrf, csrf_token, in_group
from modelgate.environments import previous_environment
from modelgate.parameters import ApprovedModel, ApprovedModelFormatError, parameter_name
from modelgate.registry import APPROVED, REJECTED

MAX_REASON_CHARS = 1000
# A committed decision still not applied after this long was abandoned (the API Lambda times out after 30 s):
# only then may the same link finish it. Sooner, it is a concurrent request (a double-click) still applying it.
RESUME_AFTER_SECONDS = 90
_LINK_STATUS = {"malformed": 400, "forged": 400, "expired": 410, "wrong_environment": 400, "wrong_action": 400}


class DecisionRefused(Exception):
    def __init__(self, reason: str, title: str, message: str, status: int) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.title = title
        self.message = message
        self.status = status


class ApplyFailed(Exception):
    """The decision is committed (link used, history written) but the registry / Parameter Store write failed.
    The same link finishes it later (see RESUME_AFTER_SECONDS)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"decision {decision.decision_id} committed but not applied")
        self.decision = decision


@dataclass(frozen=True)
class Review:
    """What the confirmation page shows."""

    token: str
    link: LinkClaims
    version: ModelVersion
    approver: Approver
    csrf: str
    evaluation: Evaluation
    request_details: dict[str, str]  # who or what asked (e.g. the inference run)
    run_metrics: list[tuple[str, str]]  # the metrics of the inference run that prompted a promotion
    serving: ApprovedModel | None = None  # what the environment's parameter says is approved (serves) now
    serving_note: str | None = None  # why that could not be read, if it could not


@dataclass(frozen=True)
class ReportView:
    """What the report page shows: the version and its full evaluation (per-customer table, plot)."""

    link: LinkClaims
    version: ModelVersion
    approver: Approver
    evaluation: Evaluation
    plot_png: bytes | None


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    parameter: str | None  # the Parameter Store parameter written (approvals only)
    resumed: bool = False  # finished a decision a previous attempt had committed but not applied
    repeated: bool = False  # the same approver submitted the same link again: nothing new was recorded


def read_link(services: Services, token: str, action: str) -> LinkClaims:
    """Claims of a link (signature, expiry, environment, action checked) or DecisionRefused."""
    try:
        return links.read(
            token, services.signer, now=services.epoch(), environment=services.settings.environment, action=action
        )
    except LinkRefused as refused:
        titles = {
            "expired": "This link has expired",
            "wrong_environment": "This link is for another environment",
            "wrong_action": "This link is for another action",
        }
        message = str(refused)
        if refused.reason == "forged":
            claimed = links.unverified_environment(token)
            if claimed and claimed != services.settings.environment:
                # Each environment signs with its own key, so another environment's link fails the MAC here;
                # say where it seems to belong (from the unverified payload: for the message only).
                message = (
                    f"This link is not valid here: it appears to be for the {claimed} environment's approval "
                    f"service, and this is {services.settings.environment}."
                )
                raise DecisionRefused(
                    "wrong_environment", "This link is for another environment", message, 400
                ) from None
        if refused.reason == "expired" and refused.claims is not None:
            message += (
                " Ask for a new e-mail: modelgate request-promotion "
                f"{services.settings.model_package_group} --version "
                f"{refused.claims.model_package_arn.rsplit('/', 1)[-1]} --to {refused.claims.environment}"
            )
        raise DecisionRefused(
            refused.reason, titles.get(refused.reason, "This link is not valid"), message, _LINK_STATUS[refused.reason]
        ) from None


def _check(services: Services, link: LinkClaims, approver: Approver) -> ModelVersion:
    """Everything but CSRF and the commit: who, which version, which state. Reads only."""
    settings = services.settings
    used = state.link_use(services.dynamodb, settings.state_table, link.token_id)
    if used is not None:
        raise DecisionRefused(
            "replayed", "This link has already been used", f"It was used by {used[0]} at {used[1]}.", 409
        )
    if link.recipient.lower() not in {email.lower() for email in settings.approver_emails}:
        raise DecisionRefused(
            "recipient_removed",
            "This link's recipient is no longer an approver",
            f"The link was sent to {link.recipient}, which is no longer on the {settings.environment} approvers list.",
            403,
        )
    if not in_group(approver, settings.approvers_group):
        raise DecisionRefused(
            "not_approver",
            "You are not an approver",
            f"{approver.display} is not a member of the '{settings.approvers_group}' group, so cannot decide "
            f"for {settings.environment}.",
            403,
        )
    version = _linked_version(services, link)
    registrant = Registrant.of(version.metadata)
    if link.action == links.APPROVE and registrant.includes(approver.identities):
        raise DecisionRefused(
            "registrant",
            "You registered this model version",
            f"{approver.display} registered {version.group} v{version.version} (or started the run that did); "
            "someone else must approve it (separation of duties). You may still reject it.",
            403,
        )
    if not approver.email:
        raise DecisionRefused(
            "unverified_identity",
            "Your e-mail address is not verified",
            f"You are signed in as {approver.display}, but the identity provider does not vouch for your e-mail "
            "address (no verified 'email' claim), and ModelGate needs it to tell approvers apart from the people "
            "who registered a model. Verify your e-mail address with the identity provider (or ask its "
            "administrator to), then sign in again from the link in the e-mail.",
            403,
        )
    existing = state.get_decision(
        services.dynamodb, settings.state_table, settings.model_package_group, version.version, link.environment
    )
    if existing is not None:
        decision = existing.decision
        raise DecisionRefused(
            "already_decided",
            "Already decided",
            f"{version.group} v{version.version} was already {decision.state.lower()} for {link.environment} "
            f"by {decision.decided_by} at {decision.decided_at}.",
            409,
        )
    try:
        check_eligible(version, link.environment)
    except NotEligible as problem:
        if problem.reason in ("registrant_unknown", "no_model_data") and link.action == links.REJECT:
            return version  # rejecting needs neither separation of duties nor a deployable artifact
        title = "Who registered this version is not known" if problem.reason == "registrant_unknown" else None
        raise DecisionRefused(
            problem.reason, title or "This version cannot be decided now", str(problem), 409
        ) from None
    return version


def _linked_version(services: Services, link: LinkClaims) -> ModelVersion:
    """The version a verified link names, if it is one of this group's in the registry (404 otherwise)."""
    settings = services.settings
    try:
        check_model_package_arn(
            link.model_package_arn,
            group=settings.model_package_group,
            account=settings.registry_account,
            region=settings.registry_region,
        )
        return read_model_version(services.sagemaker, link.model_package_arn)
    except (UnknownModelVersion, ForeignModelPackage) as error:
        raise DecisionRefused("unknown_model", "Unknown model version", str(error), 404) from None


def _own_unapplied(services: Services, link: LinkClaims, approver: Approver) -> bool:
    """Whether this link's decision, by this approver, is committed but not applied (it can be finished)."""
    settings = services.settings
    if state.link_use(services.dynamodb, settings.state_table, link.token_id) is None:
        return False
    version_number = int(link.model_package_arn.rsplit("/", 1)[-1])
    recorded = state.get_decision(
        services.dynamodb, settings.state_table, settings.model_package_group, version_number, link.environment
    )
    return (
        recorded is not None
        and recorded.status == state.RECORDED
        and recorded.decision.link_token_id == link.token_id
        and recorded.decision.decided_by_subject == approver.subject
    )


def own_decision(services: Services, link: LinkClaims, approver: Approver) -> state.RecordedDecision | None:
    """The decision this approver made with this very link, if any (the page they come back to)."""
    settings = services.settings
    version_number = int(link.model_package_arn.rsplit("/", 1)[-1])
    recorded = state.get_decision(
        services.dynamodb, settings.state_table, settings.model_package_group, version_number, link.environment
    )
    if (
        recorded is not None
        and recorded.decision.link_token_id == link.token_id
        and recorded.decision.decided_by_subject == approver.subject
    ):
        return recorded
    return None


def outcome_of(services: Services, decision: Decision, *, repeated: bool = False) -> Outcome:
    name = None
    if decision.state == APPROVED:
        name = parameter_name(services.settings.project, services.settings.model_package_group, decision.to_environment)
    return Outcome(decision, name, repeated=repeated)


def done(services: Services, token: str, action: str, approver: Approver) -> Outcome | None:
    """GET after a decision (post-redirect-get, the back button, the link opened again): this approver's own
    applied decision on this link, or None (then the confirmation page or a refusal follows)."""
    link = read_link(services, token, action)
    recorded = own_decision(services, link, approver)
    if recorded is None or recorded.status != state.APPLIED:
        return None
    return outcome_of(services, recorded.decision, repeated=True)


def currently_approved(services: Services, environment: str) -> tuple[ApprovedModel | None, str | None]:
    """(the approved model the environment serves, None) or (None, why not known). Reads only."""
    settings = services.settings
    name = parameter_name(settings.project, settings.model_package_group, environment)
    try:
        value = services.ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except services.ssm.exceptions.ParameterNotFound:
        return None, None
    except Exception as error:  # botocore errors: the page still works, it says what it could not read
        return None, f"could not read {name} ({type(error).__name__})"
    try:
        return ApprovedModel.from_json(value), None
    except (ApprovedModelFormatError, ValueError) as error:
        return None, f"{name} is not a valid approved-model record ({error})"


def review(services: Services, token: str, action: str, approver: Approver) -> Review:
    """GET: everything the confirmation page needs. Writes nothing.

    Also shown again for the approver's own decision that was committed but not applied, so that confirming
    finishes it."""
    link = read_link(services, token, action)
    if _own_unapplied(services, link, approver):
        version = read_model_version(services.sagemaker, link.model_package_arn)
    else:
        version = _check(services, link, approver)
    evaluation = read_evaluation(services.s3, version.metrics_uri)
    details, run_metrics = state.load_request(
        services.dynamodb,
        services.settings.state_table,
        state.request_key_of(link.model_package_arn, link.environment, link.request_id),
    )
    csrf = csrf_token(services.signer, approver, link, services.epoch())
    serving, serving_note = currently_approved(services, link.environment)
    return Review(token, link, version, approver, csrf, evaluation, details, run_metrics, serving, serving_note)


def report(services: Services, token: str, action: str, approver: Approver) -> ReportView:
    """GET: the full evaluation behind a link, for the approvers it was sent to (before or after deciding)."""
    settings = services.settings
    link = read_link(services, token, action)
    if not in_group(approver, settings.approvers_group):
        raise DecisionRefused(
            "not_approver",
            "You are not an approver",
            f"{approver.display} is not a member of the '{settings.approvers_group}' group, so cannot see "
            f"the evaluation for {settings.environment}.",
            403,
        )
    version = _linked_version(services, link)
    evaluation = read_evaluation(services.s3, version.metrics_uri)
    return ReportView(link, version, approver, evaluation, read_forecast_plot(services.s3, version.metrics_uri))


def decide(
    services: Services, token: str, action: str, approver: Approver, csrf: str | None, reason: str = ""
) -> Outcome:
    """POST: commit and apply the decision of `approver` on a link, exactly once."""
    settings = services.settings
    link = read_link(services, token, action)
    try:
        check_csrf(services.signer, csrf, approver, link, services.epoch())
    except CsrfRejected as error:
        raise DecisionRefused("csrf", "Please confirm from the confirmation page", str(error), 403) from None
    reason = (reason or "").strip()
    if action == links.REJECT and not reason:
        raise DecisionRefused("reason_required", "A reason is required", "Say why the version is rejected.", 400)
    if len(reason) > MAX_REASON_CHARS:
        raise DecisionRefused("reason_too_long", "Reason too long", f"At most {MAX_REASON_CHARS} characters.", 400)

    recorded = own_decision(services, link, approver)
    if recorded is not None and recorded.status == state.APPLIED:
        return outcome_of(services, recorded.decision, repeated=True)  # a second submit: already done
    resumed = _resume(services, link, approver)
    if resumed is not None:
        return resumed
    version = _check(services, link, approver)
    decided_at = iso(services.now())
    decision = Decision(
        model_package_group=settings.model_package_group,
        decision_id=Decision.make_id(decided_at, link.token_id),
        model_version=version.version,
        model_package_arn=version.arn,
        action=action,
        state=APPROVED if action == links.APPROVE else REJECTED,
        from_environment=previous_environment(link.environment) or "registry",
        to_environment=link.environment,
        decided_by=approver.display,
        decided_by_subject=approver.subject,
        decided_at=decided_at,
        reason=reason,
        request_id=link.request_id,
        link_token_id=link.token_id,
        link_recipient=link.recipient,
    )
    try:
        state.commit_decision(
            services.dynamodb,
            state_table=settings.state_table,
            history_table=settings.history_table,
            decision=decision,
            link_expires_at=link.expires_at,
        )
    except state.LinkAlreadyUsed as used:
        raise DecisionRefused(
            "replayed", "This link has already been used", f"It was used by {used.used_by} at {used.used_at}.", 409
        ) from None
    except state.AlreadyDecided as already:
        other = already.existing.decision
        raise DecisionRefused(
            "already_decided",
            "Already decided",
            f"{other.model_package_group} v{other.model_version} was already {other.state.lower()} for "
            f"{other.to_environment} by {other.decided_by} at {other.decided_at}.",
            409,
        ) from None
    return _apply_committed(services, decision, version)


def _apply_committed(services: Services, decision: Decision, version: ModelVersion) -> Outcome:
    try:
        return apply(services, decision, version)
    except Exception as error:
        raise ApplyFailed(decision) from error


def _resume(services: Services, link: LinkClaims, approver: Approver) -> Outcome | None:
    """If this link's own decision was committed but not applied (a crash or timeout), apply it now."""
    settings = services.settings
    if not _own_unapplied(services, link, approver):
        return None  # _check refuses a used link as replayed
    version_number = int(link.model_package_arn.rsplit("/", 1)[-1])
    recorded = state.get_decision(
        services.dynamodb, settings.state_table, settings.model_package_group, version_number, link.environment
    )
    committed = datetime.strptime(recorded.decision.decided_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    if (services.now() - committed).total_seconds() < RESUME_AFTER_SECONDS:
        raise DecisionRefused(
            "in_progress",
            "This decision is being recorded",
            "Your decision was received and is being applied. Reload this page in a minute to see the result.",
            409,
        )
    version = read_model_version(services.sagemaker, link.model_package_arn)
    outcome = _apply_committed(services, recorded.decision, version)
    return Outcome(outcome.decision, outcome.parameter, resumed=True)


def apply(services: Services, decision: Decision, version: ModelVersion) -> Outcome:
    """Write a committed decision to the registry and (approvals) Parameter Store. Idempotent."""
    settings = services.settings
    approved = decision.state == APPROVED
    write_decision(
        services.sagemaker,
        version,
        environment=decision.to_environment,
        approved=approved,
        decided_by=decision.decided_by,
        decided_at=decision.decided_at,
        reason=decision.reason,
    )
    name = None
    if approved:
        name = parameter_name(settings.project, settings.model_package_group, decision.to_environment)
        record = ApprovedModel(
            model_package_group=settings.model_package_group,
            environment=decision.to_environment,
            model_version=version.version,
            model_package_arn=version.arn,
            model_data_url=version.model_data_url or "",
            approved_by=decision.decided_by,
            approved_at=decision.decided_at,
            source_environment=previous_environment(decision.to_environment),
        )
        services.ssm.put_parameter(
            Name=name,
            Value=record.to_json(),
            Type="String",
            Overwrite=True,
            Description=f"ModelGate: model approved for {decision.to_environment} (written by the approval API)",
        )
    state.mark_applied(services.dynamodb, settings.state_table, decision)
    return Outcome(decision, name)
