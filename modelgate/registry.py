"""Model Registry vocabulary shared by registration (pipeline), approval and promotion.

Every model version carries custom metadata with one key per environment (dev, test, uat, prod) whose value
is that environment's approval state. moto's update_model_package replaces the whole metadata map while AWS
merges keys, so writers always send the complete map (see `customer_metadata`).
"""

from __future__ import annotations

from collections.abc import Mapping

from modelgate.environments import ENVIRONMENTS, check_environment

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATES = (PENDING, APPROVED, REJECTED)


class RegistryMetadataError(ValueError):
    pass


def initial_customer_metadata() -> dict[str, str]:
    """The metadata a new model version is registered with: pending in every environment."""
    return dict.fromkeys(ENVIRONMENTS, PENDING)


def customer_metadata(current: Mapping[str, str] | None, **changes: str) -> dict[str, str]:
    """The complete dev/test/uat/prod map after `changes`, keeping unrelated keys of `current`."""
    merged = {**initial_customer_metadata(), **dict(current or {})}
    for environment, state in changes.items():
        check_environment(environment)
        if state not in STATES:
            raise RegistryMetadataError(f"unknown approval state {state!r} for {environment}; expected {STATES}")
        merged[environment] = state
    return merged
