"""Where each model group is served from in an environment's model-repository bucket, and the deployment record
that says which version its multi-model endpoint serves.

Layout (one bucket per environment, one prefix and one record per model package group):
    models/<group>/v<version>/<customer>.tar.gz   the group's endpoint's ModelDataUrl is s3://<bucket>/models/<group>/
    deployments/<group>.json                       the group's deployment record (outside every endpoint's prefix)
The trailing '/' keeps prefixes apart (group `a` never sees `a-b`'s archives), and each group's endpoint, deploy
step and IAM grants see only their own prefix and record.

The record is written by the deploy step after every archive of the version is in place (so a reader never sees
a version whose archives are missing), and read by the invoke Lambda to turn a customer id into the versioned
TargetModel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from modelgate.model_repository import MME_PREFIX, InvalidCustomerIdError, check_customer_id, target_model

DEPLOYMENTS_PREFIX = "deployments/"
SCHEMA_VERSION = 1


def model_prefix(model_package_group: str) -> str:
    """The S3 prefix (ModelDataUrl) of one group's multi-model endpoint: `models/<group>/`."""
    return f"{MME_PREFIX}{_group(model_package_group)}/"


def deployment_key(model_package_group: str) -> str:
    """The object key of one group's deployment record: `deployments/<group>.json`."""
    return f"{DEPLOYMENTS_PREFIX}{_group(model_package_group)}.json"


def _group(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a model package group name")
    return name


class DeploymentFormatError(ValueError):
    pass


class ModelNotDeployed(LookupError):
    """The customer has no model in the deployed version (or nothing is deployed)."""


@dataclass(frozen=True)
class Deployment:
    model_package_group: str
    environment: str
    model_version: int | None  # None: nothing is approved for the environment, so nothing is served
    model_package_arn: str | None
    customers: tuple[str, ...]
    deployed_at: str  # ISO 8601, UTC

    def target(self, customer: str) -> str:
        if self.model_version is None or customer not in self.customers:
            raise ModelNotDeployed(f"no model for {customer!r} in the deployed version")
        return target_model(self.model_version, customer)

    def same_content(self, other: Deployment | None) -> bool:
        """Equal except for the time it was written (the deploy step does not rewrite an unchanged record)."""
        return other is not None and {**self.__dict__, "deployed_at": ""} == {**other.__dict__, "deployed_at": ""}

    def to_json(self) -> str:
        body = {"schema": SCHEMA_VERSION, **self.__dict__, "customers": sorted(self.customers)}
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Deployment:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
                raise DeploymentFormatError(f"deployment record schema is not {SCHEMA_VERSION}")
            version = data["model_version"]
            if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
                raise DeploymentFormatError(f"model_version must be a positive integer or null, got {version!r}")
            customers = tuple(check_customer_id(c) for c in data["customers"])
            return cls(
                model_package_group=str(data["model_package_group"]),
                environment=str(data["environment"]),
                model_version=version,
                model_package_arn=data["model_package_arn"],
                customers=customers,
                deployed_at=str(data["deployed_at"]),
            )
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, InvalidCustomerIdError) as error:
            raise DeploymentFormatError(f"not a deployment record: {error}") from None
