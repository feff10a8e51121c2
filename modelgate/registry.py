"""Model Registry vocabulary shared by registration (pipeline), approval and promotion.

Every model version carries custom metadata with one key per environment (dev, test, uat, prod) whose value
is that environment's approval state. moto's update_model_package replaces the whole metadata map while AWS
merges keys, so writers always send the complete map (see `customer_metadata`).

Other keys:
- `registered_by` (REGISTERED_BY_KEY): written by the registration (training pipeline): the e-mail address of
  the person who started the run that registered the version. The approval workflow refuses that person as
  approver (separation of duties) and refuses to request approval for a version without it. It is TYPED by
  whoever starts the run, so the approval also records the AWS principal that started it (`started_by`, from
  the pipeline execution named by `pipeline_execution_arn`, and the CreateModelPackage caller) and refuses
  anyone matching either.
- `<env>.decided_by` / `<env>.decided_at`: written by the approval workflow with each environment's decision,
  so `modelgate status` can show who decided and when from the registry alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelgate.environments import ENVIRONMENTS, check_environment

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATES = (PENDING, APPROVED, REJECTED)


REGISTERED_BY_KEY = "registered_by"
# The pipeline execution that registered the version (the pipeline writes it: ExecutionVariables), and the AWS
# principals behind the version as the dev approval service recorded them (modelgate.approval.registrant).
PIPELINE_EXECUTION_KEY = "pipeline_execution_arn"
STARTED_BY_KEY = "started_by"
STARTED_BY_NAMES_KEY = "started_by.names"


class RegistryMetadataError(ValueError):
    pass


def decided_by_key(environment: str) -> str:
    return f"{check_environment(environment)}.decided_by"


def decided_at_key(environment: str) -> str:
    return f"{check_environment(environment)}.decided_at"


def initial_customer_metadata() -> dict[str, str]:
    """The metadata a new model version is registered with: pending in every environment."""
    return dict.fromkeys(ENVIRONMENTS, PENDING)


def customer_metadata(
    current: Mapping[str, str] | None, extra: Mapping[str, str] | None = None, **changes: str
) -> dict[str, str]:
    """The complete dev/test/uat/prod map after `changes`, keeping unrelated keys of `current`, plus `extra`
    keys (e.g. `decided_by_key("dev")`) that are not approval states."""
    merged = {**initial_customer_metadata(), **dict(current or {}), **dict(extra or {})}
    for environment, state in changes.items():
        check_environment(environment)
        if state not in STATES:
            raise RegistryMetadataError(f"unknown approval state {state!r} for {environment}; expected {STATES}")
        merged[environment] = state
    return merged
