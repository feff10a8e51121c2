"""The serving Lambdas' settings: environment variable names (the stack sets them, the handlers read them).

One deploy function per (model, environment) knows its one group (MODEL_PACKAGE_GROUP); the one invoke Lambda
of an environment's inference API serves every model of that environment and is told them as JSON
(MODELGATE_SERVED_MODELS: `[{"model": ..., "group": ..., "endpoint": ...}]`), checked at synth against
Lambda's 4 KB limit on a function's environment (`check_environ_size`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modelgate.approval.settings import LAMBDA_ENVIRONMENT_LIMIT, environ_size
from modelgate.function_settings import SettingsError, required

BUCKET = "MODEL_REPOSITORY_BUCKET"
SERVED_MODELS = "MODELGATE_SERVED_MODELS"  # JSON list of ServedModel.document(): the models the API routes to
GROUP = "MODEL_PACKAGE_GROUP"
ENVIRONMENT = "MODELGATE_ENVIRONMENT"
PARAMETER = "APPROVED_MODEL_PARAMETER"
DEPLOY_LOCK_TABLE = "DEPLOY_LOCK_TABLE"  # DynamoDB table of the deploy lease (modelgate/serving/deploy_lock.py)
DEPLOY_LEASE_SECONDS = "DEPLOY_LEASE_SECONDS"  # the deploy function's timeout: no run holds the lease longer
JWT_ISSUER = "JWT_ISSUER"
JWT_AUDIENCE = "JWT_AUDIENCE"
JWKS_URL = "JWKS_URL"
USAGE_PLAN_KEY_ID = "USAGE_PLAN_KEY_ID"  # optional: the API key the authorizer hands API Gateway for metering
DEPLOYMENT_CACHE_SECONDS = "DEPLOYMENT_CACHE_SECONDS"  # optional: how long the invoke Lambda trusts its copy

# SageMaker endpoint names are at most 63 characters; CloudFormation generates them, so at synth the stack
# checks the environment's size with names this long.
ENDPOINT_NAME_MAX = 63

SET_BY = "the serving stack"


class UnknownServedModel(LookupError):
    """A request names a model package group this environment's inference API does not serve."""

    def __init__(self, group: str, served: Iterable[str]) -> None:
        self.group, self.served = group, tuple(served)
        super().__init__(f"no model {group!r} is served here; served models: {', '.join(self.served) or 'none'}")


class EnvironmentTooLarge(ValueError):
    """A serving function's environment variables would exceed Lambda's limit (raised at synth)."""


def check_environ_size(function: str, environ: Mapping[str, str]) -> int:
    """The environment's size in bytes; EnvironmentTooLarge beyond Lambda's 4 KB (which refuses the deploy)."""
    size = environ_size(environ)
    if size > LAMBDA_ENVIRONMENT_LIMIT:
        raise EnvironmentTooLarge(
            f"{function}: environment variables take {size} bytes (at most {LAMBDA_ENVIRONMENT_LIMIT}, Lambda's "
            "limit): too many models for one inference API; shorten model names/groups or split the models over "
            "two projects"
        )
    return size


@dataclass(frozen=True)
class ServedModel:
    """One model of the environment's inference API: its name, its group (the path segment), its endpoint."""

    model: str
    group: str
    endpoint_name: str

    def document(self) -> dict[str, str]:
        return {"model": self.model, "group": self.group, "endpoint": self.endpoint_name}


def served_models_value(models: Iterable[ServedModel]) -> str:
    """What SERVED_MODELS holds (compact JSON: every byte counts against the 4 KB)."""
    return json.dumps([model.document() for model in models], separators=(",", ":"))


def _served_models(value: str) -> tuple[ServedModel, ...]:
    try:
        documents = json.loads(value)
        models = tuple(ServedModel(d["model"], d["group"], d["endpoint"]) for d in documents)
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        raise SettingsError(f"{SERVED_MODELS} is not a JSON list of {{model, group, endpoint}}: {error}") from None
    groups = [model.group for model in models]
    if not models or len(set(groups)) != len(groups) or not all(isinstance(g, str) and g for g in groups):
        raise SettingsError(f"{SERVED_MODELS} must list each model group once, at least one, got {groups!r}")
    return models


@dataclass(frozen=True)
class DeploySettings:
    bucket: str
    parameter_name: str
    model_package_group: str
    environment: str
    lock_table: str
    lease_seconds: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> DeploySettings:
        bucket, parameter, group, environment, table, lease = required(
            environ, BUCKET, PARAMETER, GROUP, ENVIRONMENT, DEPLOY_LOCK_TABLE, DEPLOY_LEASE_SECONDS, set_by=SET_BY
        )
        if not lease.isdigit() or int(lease) < 1:
            raise SettingsError(f"{DEPLOY_LEASE_SECONDS} must be a whole number of seconds, got {lease!r}")
        return cls(bucket, parameter, group, environment, table, int(lease))


@dataclass(frozen=True)
class InferenceSettings:
    bucket: str
    environment: str
    models: tuple[ServedModel, ...]
    # After a deploy, a warm Lambda may call the previous version for this long (SageMaker still has it loaded).
    deployment_cache_seconds: float = 10.0

    def served(self, group: str | None) -> ServedModel:
        """The served model of `group`; UnknownServedModel (naming the served ones) for any other name."""
        for model in self.models:
            if model.group == group:
                return model
        raise UnknownServedModel(str(group), (model.group for model in self.models))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> InferenceSettings:
        bucket, environment, served = required(environ, BUCKET, ENVIRONMENT, SERVED_MODELS, set_by=SET_BY)
        try:
            seconds = float(environ.get(DEPLOYMENT_CACHE_SECONDS, "10"))
        except ValueError:
            raise SettingsError(f"{DEPLOYMENT_CACHE_SECONDS} must be a number of seconds") from None
        return cls(bucket, environment, _served_models(served), seconds)


@dataclass(frozen=True)
class AuthorizerSettings:
    issuer: str
    audience: str
    jwks_url: str
    usage_plan_key_id: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> AuthorizerSettings:
        return cls(
            *required(environ, JWT_ISSUER, JWT_AUDIENCE, JWKS_URL, set_by=SET_BY),
            environ.get(USAGE_PLAN_KEY_ID) or None,
        )
