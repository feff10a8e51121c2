"""The serving Lambdas' settings: environment variable names (the stack sets them, the handlers read them).

One deploy function per (model, environment) knows its one group (MODEL_PACKAGE_GROUP); the one invoke Lambda
of an environment's inference API serves every model of that environment and is told them in a JSON file at
the root of its code package (SERVED_MODELS_FILE: `[{"model": ..., "group": ..., "endpoint": ...}]`), not in
its environment: that grows with every model, and Lambda caps a function's environment at 4 KB (what stays
there is checked at synth, `check_environ_size`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modelgate.approval.settings import LAMBDA_ENVIRONMENT_LIMIT, environ_size
from modelgate.function_settings import SettingsError, bundled_json, required

BUCKET = "MODEL_REPOSITORY_BUCKET"
# JSON list of ServedModel.document(), at the root of the invoke function's code package: the models it routes to.
SERVED_MODELS_FILE = "modelgate-served-models.json"
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

ENDPOINT_NAME_MAX = 63  # SageMaker's limit on an endpoint's name

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
            "limit): shorten the values set in its environment"
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
    """What SERVED_MODELS_FILE holds."""
    return json.dumps([model.document() for model in models], separators=(",", ":"))


def served_models_files(models: Iterable[ServedModel]) -> dict[str, str]:
    """{file name: text} the stack ships at the root of the invoke function's code package."""
    return {SERVED_MODELS_FILE: served_models_value(models)}


def _served_models(documents: object) -> tuple[ServedModel, ...]:
    try:
        models = tuple(ServedModel(d["model"], d["group"], d["endpoint"]) for d in documents)  # type: ignore[union-attr]
    except (TypeError, KeyError) as error:
        raise SettingsError(
            f"{SERVED_MODELS_FILE} is not a JSON list of {{model, group, endpoint}} ({error!r}); "
            f"{SET_BY} writes it: redeploy"
        ) from None
    groups = [model.group for model in models]
    if not models or len(set(groups)) != len(groups) or not all(isinstance(g, str) and g for g in groups):
        raise SettingsError(f"{SERVED_MODELS_FILE} must list each model group once, at least one, got {groups!r}")
    if not all(isinstance(m.endpoint_name, str) and 0 < len(m.endpoint_name) <= ENDPOINT_NAME_MAX for m in models):
        raise SettingsError(f"{SERVED_MODELS_FILE}: every model needs its endpoint's name (1-63 characters)")
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
        bucket, environment = required(environ, BUCKET, ENVIRONMENT, set_by=SET_BY)
        try:
            seconds = float(environ.get(DEPLOYMENT_CACHE_SECONDS, "10"))
        except ValueError:
            raise SettingsError(f"{DEPLOYMENT_CACHE_SECONDS} must be a number of seconds") from None
        served = _served_models(bundled_json(environ, SERVED_MODELS_FILE, set_by=SET_BY))
        return cls(bucket, environment, served, seconds)


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
