"""Model Registry vocabulary shared by registration (pipeline), approval and promotion.

Every model version carries custom metadata with one key per environment of the promotion chain (its names come
from the config, modelgate.chain) whose value is that environment's approval state; a missing key reads as
pending. moto's update_model_package replaces the whole metadata map while AWS merges keys, so writers always
send the complete map (see `customer_metadata`).

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

import re
from collections.abc import Iterable, Mapping

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATES = (PENDING, APPROVED, REJECTED)


REGISTERED_BY_KEY = "registered_by"
# The pipeline execution that registered the version (the pipeline writes it: ExecutionVariables), and the AWS
# principals behind the version as the first environment's approval service recorded them
# (modelgate.approval.registrant).
PIPELINE_EXECUTION_KEY = "pipeline_execution_arn"
STARTED_BY_KEY = "started_by"
STARTED_BY_NAMES_KEY = "started_by.names"


class RegistryMetadataError(ValueError):
    pass


# SageMaker metadata keys: up to 128 characters of letters, digits, spaces and _.:/=+-@ (an environment name is
# a key itself, and the prefix of its decided_by / decided_at keys).
_ENVIRONMENT_KEY = re.compile(r"[\w.:/=+@-][\w .:/=+@-]{0,110}")


def _environment_key(environment: str) -> str:
    if not isinstance(environment, str) or not _ENVIRONMENT_KEY.fullmatch(environment):
        raise RegistryMetadataError(f"{environment!r} cannot be an environment's registry metadata key")
    return environment


def decided_by_key(environment: str) -> str:
    return f"{_environment_key(environment)}.decided_by"


def decided_at_key(environment: str) -> str:
    return f"{_environment_key(environment)}.decided_at"


def initial_customer_metadata(environments: Iterable[str] = ()) -> dict[str, str]:
    """The metadata a new model version is registered with: pending in every environment of the chain (pass
    `config.chain`; without it no environment key is written, and each reads as pending until it decides)."""
    return {_environment_key(environment): PENDING for environment in environments}


def customer_metadata(
    current: Mapping[str, str] | None,
    extra: Mapping[str, str] | None = None,
    *,
    environments: Iterable[str] = (),
    **changes: str,
) -> dict[str, str]:
    """The complete map after `changes` (environment -> state), keeping every key of `current` (so every
    environment's state), filling in `environments` (the chain) still missing as pending, plus `extra` keys
    (e.g. `decided_by_key(env)`) that are not approval states."""
    merged = {**initial_customer_metadata(environments), **dict(current or {}), **dict(extra or {})}
    for environment, state in changes.items():
        _environment_key(environment)
        if state not in STATES:
            raise RegistryMetadataError(f"unknown approval state {state!r} for {environment}; expected {STATES}")
        merged[environment] = state
    return merged
