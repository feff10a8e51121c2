"""Deciding on a link: what the confirmation page shows (GET, changes nothing) and the decision itself (POST).

Every refusal is a DecisionRefused with a stable `reason`, a title and a message for the page, and the HTTP
status; a refused request writes nothing. A link is verified once per request (`read_link`, one KMS call) and
its claims are passed to everything else. Every decision is keyed by (model package group, version,
environment); the link names the group, and a group the environment does not serve is refused.

Quorum (the model's `approvers.quorum` in this environment, N): each approval by a distinct person counts
(never the registrant, never the same person twice); only the Nth is the decision, which moves the version into
the environment (registry, Parameter Store, and so the promotion request after inference). One rejection
rejects, whatever the count. An accepted decision is committed in DynamoDB first (the single point where
concurrent requests are serialised, modelgate.approval.state), then applied to the registry and Parameter
Store. If applying fails, the same link (POSTed again) finishes the job instead of being "replayed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from modelgate.approval.settings import ModelApproval, UnknownModelGroupError
from modelgate.approval.signin import Approver, CsrfRejected, check_csrf, csrf_token, in_group
from modelgate.parameters import ApprovedModel, ApprovedModelFormatError, parameter_name
from modelgate.registry import APPROVED, PENDING, REJECTED

MAX_REASON_CHARS = 1000
# A committed decision still not applied after this long was abandoned (the API Lambda times out after 30 s):
# only then may the same link finish it. Sooner, it is a concurrent request (a double-click) still applying it.
RESUME_AFTER_SECONDS = 90
# Concurrent approvals of one version re-read the tally and retry; each retry means another approval was counted,
# so more attempts than approvers cannot be needed.
MAX_COUNT_ATTEMPTS = 25
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
    model: ModelApproval
    version: ModelVersion
    approver: Approver
    csrf: str
    evaluation: Evaluation
    request_details: dict[str, str]  # who or what asked (e.g. the inference run)
    run_metrics: list[tuple[str, str]]  # the metrics of the inference run that prompted a promotion
    serving: ApprovedModel | None = None  # what the environment's parameter says is approved (serves) now
    serving_note: str | None = None  # why that could not be read, if it could not
    approvals: state.Approvals = field(default_factory=state.Approvals)  # approvals counted so far towards model.quorum


@dataclass(frozen=True)
class ReportView:
    """What the report page shows: the version and its full evaluation (per-customer table, plot)."""

    link: LinkClaims
    model: ModelApproval
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
    quorum: int = 1  # approvals the environment needs for this model
    approvers: tuple[str, ...] = ()  # who approved so far (all of them, for the deciding approval)

    @property
    def counted_only(self) -> bool:
        """An approval counted towards the quorum that did not (yet) move the version."""
        return self.decision.state == PENDING

    def progress(self) -> str:
        """'1 of 2 approvals: alice@example.com' (empty with a quorum of 1)."""
        return progress_text(len(self.approvers), self.quorum, self.approvers)


def progress_text(count: int, quorum: int, approvers: tuple[str, ...]) -> str:
    if quorum <= 1:
        return ""
    return f"{count} of {quorum} approvals" + (f": {', '.join(approvers)}" if approvers else "")


def _more_needed(count: int, quorum: int) -> str:
    missing = max(quorum - count, 0)
    return f"{missing} more approver{'s' if missing != 1 else ''} needed"


def read_link(services: Services, token: str, action: str) -> LinkClaims:
    """Claims of a link (signature, expiry, environment, action, served group checked) or DecisionRefused.

    The one place a presented link is verified (a KMS VerifyMac call): call it once per request."""
    settings = services.settings
    try:
        link = links.read(token, services.signer, now=services.epoch(), environment=settings.environment, action=action)
    except LinkRefused as refused:
        titles = {
            "expired": "This link has expired",
            "wrong_environment": "This link is for another environment",
            "wrong_action": "This link is for another action",
        }
        message = str(refused)
        if refused.reason == "forged":
            claimed = links.unverified_environment(token, settings.chain)
            if claimed and claimed != settings.environment:
                # Each environment signs with its own key, so another environment's link fails the MAC here;
                # say where it seems to belong (from the unverified payload: for the message only).
                message = (
                    f"This link is not valid here: it appears to be for the {claimed} environment's approval "
                    f"service, and this is {settings.environment}."
                )
                raise DecisionRefused(
                    "wrong_environment", "This link is for another environment", message, 400
                ) from None
        if refused.reason == "expired" and refused.claims is not None:
            claims = refused.claims
            known = next((m.model for m in settings.models if m.group == claims.model_package_group), None)
            message += (
                " Ask for a new e-mail: modelgate request-promotion "
                f"--model {known or claims.model_package_group} --version {claims.version} --to {claims.environment}"
            )
        raise DecisionRefused(
            refused.reason, titles.get(refused.reason, "This link is not valid"), message, _LINK_STATUS[refused.reason]
        ) from None
    _model(services, link)
    return link


def _model(services: Services, link: LinkClaims) -> ModelApproval:
    """The settings of the link's model here; DecisionRefused if this environment does not serve its group."""
    try:
        return services.settings.model(link.model_package_group)
    except UnknownModelGroupError as unknown:
        raise DecisionRefused(
            "unknown_group",
            "This link is for a model this environment does not serve",
            f"{unknown} (the link names {link.model_package_group}; this is the {services.settings.environment} "
            "approval service).",
            404,
        ) from None


def _check(
    services: Services, link: LinkClaims, approver: Approver, model: ModelApproval
) -> tuple[ModelVersion, state.Approvals]:
    """Everything but CSRF and the commit: who, which version, which state, which approvals so far. Reads only."""
    settings = services.settings
    used = state.link_use(services.dynamodb, settings.state_table, link.token_id)
    if used is not None:
        raise DecisionRefused(
            "replayed", "This link has already been used", f"It was used by {used[0]} at {used[1]}.", 409
        )
    if link.recipient.lower() not in {email.lower() for email in model.approver_emails}:
        raise DecisionRefused(
            "recipient_removed",
            "This link's recipient is no longer an approver",
            f"The link was sent to {link.recipient}, which is no longer on the {settings.environment} approvers list "
            f"of {model.model}.",
            403,
        )
    if not in_group(approver, model.approvers_group):
        raise DecisionRefused(
            "not_approver",
            "You are not an approver",
            f"{approver.display} is not a member of the '{model.approvers_group}' group, so cannot decide "
            f"for {model.model} in {settings.environment}.",
            403,
        )
    version = _linked_version(services, link, model)
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
        services.dynamodb, settings.state_table, model.group, version.version, link.environment
    )
    if existing is not None:
        raise _already_decided(existing.decision)
    try:
        check_eligible(version, link.environment, settings.chain)
    except NotEligible as problem:
        if problem.reason in ("registrant_unknown", "no_model_data") and link.action == links.REJECT:
            return version, state.Approvals()  # rejecting needs neither separation of duties nor an artifact
        title = "Who registered this version is not known" if problem.reason == "registrant_unknown" else None
        raise DecisionRefused(
            problem.reason, title or "This version cannot be decided now", str(problem), 409
        ) from None
    counted = state.approvals(services.dynamodb, settings.state_table, model.group, version.version, link.environment)
    if link.action == links.APPROVE and counted.includes(approver.subject, approver.email):
        raise _already_approved(approver, version, link.environment, counted, model.quorum)
    return version, counted


def _already_decided(decision: Decision) -> DecisionRefused:
    return DecisionRefused(
        "already_decided",
        "Already decided",
        f"{decision.model_package_group} v{decision.model_version} was already {decision.state.lower()} for "
        f"{decision.to_environment} by {decision.decided_by} at {decision.decided_at}.",
        409,
    )


def _already_approved(
    approver: Approver, version: ModelVersion, environment: str, counted: state.Approvals, quorum: int
) -> DecisionRefused:
    return DecisionRefused(
        "already_approved",
        "You already approved this version",
        f"You ({approver.display}) already approved {version.group} version {version.version} for {environment}; "
        f"{_more_needed(counted.count, quorum)} ({progress_text(counted.count, quorum, counted.approvers)}). "
        "The same person counts once.",
        409,
    )


def _linked_version(services: Services, link: LinkClaims, model: ModelApproval) -> ModelVersion:
    """The version a verified link names, if it is one of its group's in the registry (404 otherwise)."""
    settings = services.settings
    try:
        check_model_package_arn(
            link.model_package_arn,
            group=model.group,
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
    recorded = state.get_decision(
        services.dynamodb, settings.state_table, link.model_package_group, link.version, link.environment
    )
    return (
        recorded is not None
        and recorded.status == state.RECORDED
        and recorded.decision.link_token_id == link.token_id
        and recorded.decision.decided_by_subject == approver.subject
    )


def own_decision(services: Services, link: LinkClaims, approver: Approver) -> state.RecordedDecision | None:
    """The decision (or the approval counted towards the quorum) this approver made with this very link, if any
    (the page they come back to)."""
    settings = services.settings
    group, version, env = link.model_package_group, link.version, link.environment
    recorded = state.get_decision(services.dynamodb, settings.state_table, group, version, env)
    if (
        recorded is None
        or recorded.decision.link_token_id != link.token_id
        or recorded.decision.decided_by_subject != approver.subject
    ):
        recorded = state.own_vote(services.dynamodb, settings.state_table, group, version, env, approver.subject)
    if recorded is not None and recorded.decision.link_token_id == link.token_id:
        return recorded
    return None


def outcome_of(services: Services, decision: Decision, *, repeated: bool = False) -> Outcome:
    settings = services.settings
    model = settings.model(decision.model_package_group)
    name = None
    if decision.state == APPROVED:
        name = parameter_name(settings.project, decision.model_package_group, decision.to_environment)
    counted = state.approvals(
        services.dynamodb, settings.state_table, decision.model_package_group, decision.model_version,
        decision.to_environment,
    )  # fmt: skip
    approvers = counted.approvers if decision.action == links.APPROVE else ()
    return Outcome(decision, name, repeated=repeated, quorum=model.quorum, approvers=approvers)


def done(services: Services, link: LinkClaims, approver: Approver) -> Outcome | None:
    """GET after a decision (post-redirect-get, the back button, the link opened again): this approver's own
    applied decision (or counted approval) on this link, or None (then the confirmation page or a refusal)."""
    recorded = own_decision(services, link, approver)
    if recorded is None or recorded.status != state.APPLIED:
        return None
    return outcome_of(services, recorded.decision, repeated=True)


def currently_approved(services: Services, group: str, environment: str) -> tuple[ApprovedModel | None, str | None]:
    """(the approved model of `group` the environment serves, None) or (None, why not known). Reads only."""
    name = parameter_name(services.settings.project, group, environment)
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


def review(services: Services, link: LinkClaims, token: str, approver: Approver) -> Review:
    """GET: everything the confirmation page needs (`link`: read_link's claims of `token`). Writes nothing.

    Also shown again for the approver's own decision that was committed but not applied, so that confirming
    finishes it."""
    settings = services.settings
    model = _model(services, link)
    if _own_unapplied(services, link, approver):
        version = read_model_version(services.sagemaker, link.model_package_arn)
        counted = state.approvals(
            services.dynamodb, settings.state_table, model.group, version.version, link.environment
        )
    else:
        version, counted = _check(services, link, approver, model)
    evaluation = read_evaluation(services.s3, version.metrics_uri)
    details, run_metrics = state.load_request(
        services.dynamodb,
        settings.state_table,
        state.request_key_of(model.group, link.model_package_arn, link.environment, link.request_id),
    )
    csrf = csrf_token(services.signer, approver, link, services.epoch())
    serving, serving_note = currently_approved(services, model.group, link.environment)
    return Review(
        token, link, model, version, approver, csrf, evaluation, details, run_metrics, serving, serving_note, counted
    )


def report(services: Services, link: LinkClaims, approver: Approver) -> ReportView:
    """GET: the full evaluation behind a link, for the approvers it was sent to (before or after deciding)."""
    settings = services.settings
    model = _model(services, link)
    if not in_group(approver, model.approvers_group):
        raise DecisionRefused(
            "not_approver",
            "You are not an approver",
            f"{approver.display} is not a member of the '{model.approvers_group}' group, so cannot see "
            f"the evaluation of {model.model} for {settings.environment}.",
            403,
        )
    version = _linked_version(services, link, model)
    evaluation = read_evaluation(services.s3, version.metrics_uri)
    return ReportView(link, model, version, approver, evaluation, read_forecast_plot(services.s3, version.metrics_uri))


def decide(services: Services, link: LinkClaims, approver: Approver, csrf: str | None, reason: str = "") -> Outcome:
    """POST: commit and apply the decision (or count the approval) of `approver` on a link, exactly once."""
    settings = services.settings
    action = link.action
    try:
        check_csrf(services.signer, csrf, approver, link, services.epoch())
    except CsrfRejected as error:
        raise DecisionRefused("csrf", "Please confirm from the confirmation page", str(error), 403) from None
    reason = (reason or "").strip()
    if action == links.REJECT and not reason:
        raise DecisionRefused("reason_required", "A reason is required", "Say why the version is rejected.", 400)
    if len(reason) > MAX_REASON_CHARS:
        raise DecisionRefused("reason_too_long", "Reason too long", f"At most {MAX_REASON_CHARS} characters.", 400)

    model = _model(services, link)
    recorded = own_decision(services, link, approver)
    if recorded is not None and recorded.status == state.APPLIED:
        return outcome_of(services, recorded.decision, repeated=True)  # a second submit: already done
    resumed = _resume(services, link, approver)
    if resumed is not None:
        return resumed
    for _ in range(MAX_COUNT_ATTEMPTS):
        version, counted = _check(services, link, approver, model)
        approving = action == links.APPROVE
        final = not approving or counted.count + 1 >= model.quorum
        decided_at = iso(services.now())
        decision = Decision(
            model_package_group=model.group,
            decision_id=Decision.make_id(decided_at, link.token_id),
            model_version=version.version,
            model_package_arn=version.arn,
            action=action,
            state=(APPROVED if final else PENDING) if approving else REJECTED,
            from_environment=settings.chain.previous(link.environment) or "registry",
            to_environment=link.environment,
            decided_by=approver.display,
            decided_by_subject=approver.subject,
            decided_at=decided_at,
            reason=reason,
            request_id=link.request_id,
            link_token_id=link.token_id,
            link_recipient=link.recipient,
            model=model.model,
            progress=f"{counted.count + 1} of {model.quorum}" if approving and model.quorum > 1 else "",
        )
        try:
            state.commit_decision(
                services.dynamodb,
                state_table=settings.state_table,
                history_table=settings.history_table,
                decision=decision,
                link_expires_at=link.expires_at,
                quorum=model.quorum,
                seen=counted,
            )
        except state._TallyChanged:
            continue  # another approval was counted meanwhile: check again against the new count
        except state.LinkAlreadyUsed as used:
            raise DecisionRefused(
                "replayed", "This link has already been used", f"It was used by {used.used_by} at {used.used_at}.", 409
            ) from None
        except state.AlreadyDecided as already:
            raise _already_decided(already.existing.decision) from None
        except state.AlreadyApproved:
            now_counted = state.approvals(
                services.dynamodb, settings.state_table, model.group, version.version, link.environment
            )
            raise _already_approved(approver, version, link.environment, now_counted, model.quorum) from None
        approvers = (*counted.approvers, approver.display) if approving else ()
        if not final:
            return Outcome(decision, None, quorum=model.quorum, approvers=approvers)
        outcome = _apply_committed(services, decision, version, approvers)
        return Outcome(outcome.decision, outcome.parameter, quorum=model.quorum, approvers=approvers)
    raise DecisionRefused(
        "in_progress", "Approvals are being counted", "Many approvals arrived at once; try again in a moment.", 409
    )


def _apply_committed(
    services: Services, decision: Decision, version: ModelVersion, approvers: tuple[str, ...] = ()
) -> Outcome:
    try:
        return apply(services, decision, version, approvers)
    except Exception as error:
        raise ApplyFailed(decision) from error


def _resume(services: Services, link: LinkClaims, approver: Approver) -> Outcome | None:
    """If this link's own decision was committed but not applied (a crash or timeout), apply it now."""
    settings = services.settings
    if not _own_unapplied(services, link, approver):
        return None  # _check refuses a used link as replayed
    recorded = state.get_decision(
        services.dynamodb, settings.state_table, link.model_package_group, link.version, link.environment
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
    approvers = ()
    if recorded.decision.state == APPROVED:
        approvers = state.approvals(
            services.dynamodb, settings.state_table, link.model_package_group, link.version, link.environment
        ).approvers
    outcome = _apply_committed(services, recorded.decision, version, approvers)
    model = settings.model(link.model_package_group)
    return Outcome(outcome.decision, outcome.parameter, resumed=True, quorum=model.quorum, approvers=approvers)


def apply(services: Services, decision: Decision, version: ModelVersion, approvers: tuple[str, ...] = ()) -> Outcome:
    """Write a committed decision to the registry and (approvals) Parameter Store. Idempotent.

    `approvers`: everyone whose approval made the quorum (recorded as approved_by; the decider alone if empty)."""
    settings = services.settings
    group = decision.model_package_group
    approved = decision.state == APPROVED
    who = ", ".join(approvers) if len(approvers) > 1 else decision.decided_by
    write_decision(
        services.sagemaker,
        version,
        chain=settings.chain,
        environment=decision.to_environment,
        approved=approved,
        decided_by=who,
        decided_at=decision.decided_at,
        reason=decision.reason,
    )
    name = None
    if approved:
        name = parameter_name(settings.project, group, decision.to_environment)
        record = ApprovedModel(
            model_package_group=group,
            environment=decision.to_environment,
            model_version=version.version,
            model_package_arn=version.arn,
            model_data_url=version.model_data_url or "",
            approved_by=who,
            approved_at=decision.decided_at,
            source_environment=settings.chain.previous(decision.to_environment),
        )
        services.ssm.put_parameter(
            Name=name,
            Value=record.to_json(),
            Type="String",
            Overwrite=True,
            Description=f"ModelGate: {group} approved for {decision.to_environment} (written by the approval API)",
        )
    state.mark_applied(services.dynamodb, settings.state_table, decision)
    return Outcome(decision, name)
