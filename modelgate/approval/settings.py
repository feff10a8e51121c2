"""What the approval Lambdas are told by their stack, as environment variables (names owned here).

The CDK approval stack writes these (stacks/approval_stack.py imports the names); handlers read them once per
container; tests and the demo build the same objects directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from modelgate.environments import check_environment
from modelgate.function_settings import SettingsError, required

PROJECT = "MODELGATE_PROJECT"
MODEL_PACKAGE_GROUP = "MODELGATE_MODEL_PACKAGE_GROUP"
ENVIRONMENT = "MODELGATE_ENVIRONMENT"
REGISTRY_ACCOUNT = "MODELGATE_REGISTRY_ACCOUNT"
REGISTRY_REGION = "MODELGATE_REGISTRY_REGION"
SIGNING_KEY = "MODELGATE_SIGNING_KEY_ID"
STATE_TABLE = "MODELGATE_STATE_TABLE"
HISTORY_TABLE = "MODELGATE_HISTORY_TABLE"
SENDER = "MODELGATE_SENDER_EMAIL"
APPROVER_EMAILS = "MODELGATE_APPROVER_EMAILS"
APPROVERS_GROUP = "MODELGATE_APPROVERS_GROUP"
LINK_TTL_SECONDS = "MODELGATE_LINK_TTL_SECONDS"
API_URL = "MODELGATE_APPROVAL_API_URL"
NEXT_EVENT_BUS = "MODELGATE_NEXT_ENVIRONMENT_EVENT_BUS"
METRIC_THRESHOLD = "MODELGATE_METRIC_THRESHOLD"  # config training.metric_threshold: shown to approvers
SIGNIN_ISSUER = "MODELGATE_SIGNIN_ISSUER"
SIGNIN_JWKS_URL = "MODELGATE_SIGNIN_JWKS_URL"
SIGNIN_AUTHORIZE_URL = "MODELGATE_SIGNIN_AUTHORIZE_URL"
SIGNIN_TOKEN_URL = "MODELGATE_SIGNIN_TOKEN_URL"  # noqa: S105 (a variable name, not a secret)
SIGNIN_CLIENT_ID = "MODELGATE_SIGNIN_CLIENT_ID"
SIGNIN_GROUPS_CLAIM = "MODELGATE_SIGNIN_GROUPS_CLAIM"


SET_BY = "the approval stack"
_REQUIRED = (
    PROJECT,
    MODEL_PACKAGE_GROUP,
    ENVIRONMENT,
    REGISTRY_ACCOUNT,
    REGISTRY_REGION,
    SIGNING_KEY,
    STATE_TABLE,
    HISTORY_TABLE,
    SENDER,
    APPROVER_EMAILS,
    APPROVERS_GROUP,
    LINK_TTL_SECONDS,
    API_URL,
)


@dataclass(frozen=True)
class ApprovalSettings:
    project: str
    model_package_group: str
    environment: str
    registry_account: str
    registry_region: str
    signing_key_id: str
    state_table: str
    history_table: str
    sender_email: str
    approver_emails: tuple[str, ...]
    approvers_group: str
    link_ttl_seconds: int
    api_url: str  # base URL of this environment's approval API, e.g. https://x.execute-api.../prod
    next_event_bus: str | None = None  # ARN of the next environment's ModelGate (promotion) bus; None for prod
    metric_threshold: float | None = None  # the training gate's threshold (aggregate MAPE ratio), for pages

    @property
    def model_package_group_arn(self) -> str:
        return (
            f"arn:aws:sagemaker:{self.registry_region}:{self.registry_account}"
            f":model-package-group/{self.model_package_group}"
        )

    def log_keys(self) -> dict[str, str]:
        """What every log line of an approval function carries."""
        return {"model_package_group": self.model_package_group, "environment": self.environment}

    def model_package_arn(self, version: int) -> str:
        return (
            f"arn:aws:sagemaker:{self.registry_region}:{self.registry_account}"
            f":model-package/{self.model_package_group.lower()}/{version}"
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ApprovalSettings:
        env = os.environ if environ is None else environ
        need = dict(zip(_REQUIRED, required(env, *_REQUIRED, set_by=SET_BY), strict=True))
        try:
            ttl = int(need[LINK_TTL_SECONDS])
        except ValueError:
            raise SettingsError(f"{LINK_TTL_SECONDS} must be a number of seconds") from None
        try:
            threshold = float(env[METRIC_THRESHOLD]) if env.get(METRIC_THRESHOLD, "").strip() else None
        except ValueError:
            raise SettingsError(f"{METRIC_THRESHOLD} must be a number") from None
        return cls(
            project=need[PROJECT],
            model_package_group=need[MODEL_PACKAGE_GROUP],
            environment=check_environment(need[ENVIRONMENT]),
            registry_account=need[REGISTRY_ACCOUNT],
            registry_region=need[REGISTRY_REGION],
            signing_key_id=need[SIGNING_KEY],
            state_table=need[STATE_TABLE],
            history_table=need[HISTORY_TABLE],
            sender_email=need[SENDER],
            approver_emails=tuple(e.strip() for e in need[APPROVER_EMAILS].split(",") if e.strip()),
            approvers_group=need[APPROVERS_GROUP],
            link_ttl_seconds=ttl,
            api_url=need[API_URL].rstrip("/"),
            next_event_bus=env.get(NEXT_EVENT_BUS, "").strip() or None,
            metric_threshold=threshold,
        )

    def environ(self) -> dict[str, str]:
        """The inverse of from_environ (tests, the demo and the CDK stack use it)."""
        values = {
            PROJECT: self.project,
            MODEL_PACKAGE_GROUP: self.model_package_group,
            ENVIRONMENT: self.environment,
            REGISTRY_ACCOUNT: self.registry_account,
            REGISTRY_REGION: self.registry_region,
            SIGNING_KEY: self.signing_key_id,
            STATE_TABLE: self.state_table,
            HISTORY_TABLE: self.history_table,
            SENDER: self.sender_email,
            APPROVER_EMAILS: ",".join(self.approver_emails),
            APPROVERS_GROUP: self.approvers_group,
            LINK_TTL_SECONDS: str(self.link_ttl_seconds),
            API_URL: self.api_url,
        }
        if self.next_event_bus:
            values[NEXT_EVENT_BUS] = self.next_event_bus
        if self.metric_threshold is not None:
            values[METRIC_THRESHOLD] = repr(self.metric_threshold)
        return values


@dataclass(frozen=True)
class SignInSettings:
    """The approvers' OIDC provider (the Cognito user pool of the stack, or a stand-in)."""

    issuer: str
    jwks_url: str
    authorize_url: str
    token_url: str
    client_id: str
    groups_claim: str = "cognito:groups"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SignInSettings:
        env = os.environ if environ is None else environ
        issuer, jwks_url, authorize_url, token_url, client_id = required(
            env, SIGNIN_ISSUER, SIGNIN_JWKS_URL, SIGNIN_AUTHORIZE_URL, SIGNIN_TOKEN_URL, SIGNIN_CLIENT_ID, set_by=SET_BY
        )
        return cls(
            issuer=issuer,
            jwks_url=jwks_url,
            authorize_url=authorize_url,
            token_url=token_url,
            client_id=client_id,
            groups_claim=env.get(SIGNIN_GROUPS_CLAIM, "").strip() or "cognito:groups",
        )

    def environ(self) -> dict[str, str]:
        return {
            SIGNIN_ISSUER: self.issuer,
            SIGNIN_JWKS_URL: self.jwks_url,
            SIGNIN_AUTHORIZE_URL: self.authorize_url,
            SIGNIN_TOKEN_URL: self.token_url,
            SIGNIN_CLIENT_ID: self.client_id,
            SIGNIN_GROUPS_CLAIM: self.groups_claim,
        }
