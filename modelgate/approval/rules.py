"""The promotion rules, in one place: who may be asked, and what may be decided, for which environment."""

from __future__ import annotations

from modelgate.approval.model_versions import ModelVersion
from modelgate.approval.registrant import Registrant, RegistrantUnknown
from modelgate.chain import Chain
from modelgate.registry import APPROVED, PENDING


class NotEligible(Exception):
    """The version cannot be approved for the environment now. `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_eligible(version: ModelVersion, environment: str, chain: Chain) -> None:
    """Raise NotEligible unless `version` awaits a decision in `environment` and may get one.

    Promotion skips no environment: the previous environment must have approved the version.
    """
    label = f"{version.group} v{version.version}"
    state = version.state(environment, chain)
    if state != PENDING:
        who = version.decided_by(environment)
        raise NotEligible(
            "already_decided",
            f"{label} is already {state.lower()} for {environment}" + (f" (by {who})" if who else "") + ".",
        )
    previous = chain.previous(environment)
    if previous is not None and version.state(previous, chain) != APPROVED:
        raise NotEligible(
            "predecessor_not_approved",
            f"{label} is not approved for {previous} ({version.state(previous, chain)}); promotion to {environment} "
            f"must follow approval in {previous}.",
        )
    try:
        Registrant.of(version.metadata).check_known(label)
    except RegistrantUnknown as unknown:
        raise NotEligible("registrant_unknown", str(unknown)) from None
    if not version.model_data_url:
        raise NotEligible("no_model_data", f"{label} has no model data URL in its inference specification.")
