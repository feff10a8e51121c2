"""The serving Lambdas' settings: environment variable names (the stack sets them, the handlers read them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from modelgate.environments import check_environment
from modelgate.function_settings import SettingsError, required

BUCKET = "MODEL_REPOSITORY_BUCKET"
ENDPOINT = "ENDPOINT_NAME"
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


SET_BY = "the serving stack"


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
        return cls(bucket, parameter, group, check_environment(environment), table, int(lease))


@dataclass(frozen=True)
class InferenceSettings:
    bucket: str
    endpoint_name: str
    environment: str
    # After a deploy, a warm Lambda may call the previous version for this long (SageMaker still has it loaded).
    deployment_cache_seconds: float = 10.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> InferenceSettings:
        bucket, endpoint, environment = required(environ, BUCKET, ENDPOINT, ENVIRONMENT, set_by=SET_BY)
        try:
            seconds = float(environ.get(DEPLOYMENT_CACHE_SECONDS, "10"))
        except ValueError:
            raise SettingsError(f"{DEPLOYMENT_CACHE_SECONDS} must be a number of seconds") from None
        return cls(bucket, endpoint, check_environment(environment), seconds)


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
