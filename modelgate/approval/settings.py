"""What the approval Lambdas are told by their stack: environment variables (names owned here) and the models'
list, a JSON file in the functions' code package (it grows with every model: Lambda caps environments at 4 KB).

The CDK approval stack writes these (stacks/approval_stack.py imports the names); handlers read them once per
container; tests and the demo build the same objects directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from modelgate.chain import CHAIN, Chain
from modelgate.function_settings import SettingsError, bundled_json, required

PROJECT = "MODELGATE_PROJECT"
ENVIRONMENT = "MODELGATE_ENVIRONMENT"
# CHAIN ("a,b,c", modelgate/chain.py) and MODELS_FILE (JSON list of ModelApproval.document(), at the root of the
# functions' code package) make one approval stack serve every model of the platform through any promotion chain.
MODELS_FILE = "modelgate-approval-models.json"
REGISTRY_ACCOUNT = "MODELGATE_REGISTRY_ACCOUNT"
REGISTRY_REGION = "MODELGATE_REGISTRY_REGION"
SIGNING_KEY = "MODELGATE_SIGNING_KEY_ID"
STATE_TABLE = "MODELGATE_STATE_TABLE"
HISTORY_TABLE = "MODELGATE_HISTORY_TABLE"
SENDER = "MODELGATE_SENDER_EMAIL"
API_URL = "MODELGATE_APPROVAL_API_URL"
NEXT_EVENT_BUS = "MODELGATE_NEXT_ENVIRONMENT_EVENT_BUS"
SIGNIN_ISSUER = "MODELGATE_SIGNIN_ISSUER"
SIGNIN_JWKS_URL = "MODELGATE_SIGNIN_JWKS_URL"
SIGNIN_AUTHORIZE_URL = "MODELGATE_SIGNIN_AUTHORIZE_URL"
SIGNIN_TOKEN_URL = "MODELGATE_SIGNIN_TOKEN_URL"  # noqa: S105 (a variable name, not a secret)
SIGNIN_CLIENT_ID = "MODELGATE_SIGNIN_CLIENT_ID"
SIGNIN_GROUPS_CLAIM = "MODELGATE_SIGNIN_GROUPS_CLAIM"

# Lambda refuses a function whose environment variables exceed 4 KB in total (keys and values); the stack
# checks the approval functions' at synth (environ_size). The models' list is not in it: its size does not
# depend on the number of models.
LAMBDA_ENVIRONMENT_LIMIT = 4096

SET_BY = "the approval stack"
_REQUIRED = (
    PROJECT,
    ENVIRONMENT,
    CHAIN,
    REGISTRY_ACCOUNT,
    REGISTRY_REGION,
    SIGNING_KEY,
    STATE_TABLE,
    HISTORY_TABLE,
    SENDER,
    API_URL,
)


class UnknownModelGroupError(LookupError):
    """An event, link or command names a model package group this platform does not serve."""

    def __init__(self, group: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown model package group {group!r}; this platform serves: {', '.join(known)}")
        self.group = group


@dataclass(frozen=True)
class ModelApproval:
    """One model's approval settings in this environment (config: models[].environments.<env>)."""

    model: str  # the model's name in the config
    group: str  # its Model Registry group: what events, links, Parameter Store paths and history are keyed by
    approver_emails: tuple[str, ...]
    approvers_group: str  # Cognito group whose members may decide
    quorum: int = 1  # distinct approvers (never the registrant) needed before the version moves here
    link_ttl_seconds: int = 72 * 3600
    metric_threshold: float | None = None  # the training gate's threshold (aggregate MAPE ratio), for pages

    def document(self) -> dict:
        values = {
            "model": self.model,
            "group": self.group,
            "emails": list(self.approver_emails),
            "approvers_group": self.approvers_group,
            "quorum": self.quorum,
            "link_ttl_seconds": self.link_ttl_seconds,
        }
        if self.metric_threshold is not None:
            values["metric_threshold"] = self.metric_threshold
        return values

    @classmethod
    def from_document(cls, document: Mapping) -> ModelApproval:
        try:
            model = cls(
                model=str(document["model"]),
                group=str(document["group"]),
                approver_emails=tuple(str(e) for e in document["emails"]),
                approvers_group=str(document["approvers_group"]),
                quorum=int(document.get("quorum", 1)),
                link_ttl_seconds=int(document.get("link_ttl_seconds", 72 * 3600)),
                metric_threshold=(
                    float(document["metric_threshold"]) if document.get("metric_threshold") is not None else None
                ),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise SettingsError(
                f"{MODELS_FILE}: each model needs model, group, emails, approvers_group ({error})"
            ) from None
        if model.quorum < 1 or not model.approver_emails:
            raise SettingsError(f"{MODELS_FILE}: {model.group}: quorum must be >= 1 and emails not empty")
        return model


def model_approvals(models, environment: str) -> tuple[ModelApproval, ...]:
    """Every model's approval settings in `environment`, from the config's models (infra.config.ModelProject;
    not imported: this module ships to Lambda, the config's pydantic models do not). The stack and the local
    world build ApprovalSettings.models with it."""
    found = []
    for project in models:
        resolved = project.environments[environment]
        found.append(
            ModelApproval(
                model=project.name,
                group=project.model_package_group,
                approver_emails=tuple(resolved.approvers.emails),
                approvers_group=resolved.approvers.group,
                quorum=resolved.approvers.quorum,
                link_ttl_seconds=resolved.approvers.link_ttl_hours * 3600,
                metric_threshold=resolved.training.metric_threshold,
            )
        )
    return tuple(found)


@dataclass(frozen=True)
class ApprovalSettings:
    project: str
    environment: str
    chain: Chain
    models: tuple[ModelApproval, ...]
    registry_account: str
    registry_region: str
    signing_key_id: str
    state_table: str
    history_table: str
    sender_email: str
    api_url: str  # base URL of this environment's approval API, e.g. https://x.execute-api.../<stage>
    next_event_bus: str | None = None  # ARN of the next environment's ModelGate (promotion) bus; None for the last

    def __post_init__(self) -> None:
        self.chain.check(self.environment)
        groups = [model.group for model in self.models]
        if not groups or len(set(groups)) != len(groups):
            raise SettingsError(f"{MODELS_FILE}: at least one model, each group once (got {groups})")

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(model.group for model in self.models)

    def model(self, group: str) -> ModelApproval:
        """The settings of the model whose registry group is `group`; UnknownModelGroupError for any other."""
        for model in self.models:
            if model.group == group:
                return model
        raise UnknownModelGroupError(group, self.groups)

    def model_package_group_arn(self, group: str) -> str:
        return f"arn:aws:sagemaker:{self.registry_region}:{self.registry_account}:model-package-group/{group}"

    def model_package_arn(self, group: str, version: int) -> str:
        # IAM and SageMaker lower-case the group name in package ARNs.
        return (
            f"arn:aws:sagemaker:{self.registry_region}:{self.registry_account}:model-package/{group.lower()}/{version}"
        )

    def log_keys(self, group: str | None = None) -> dict[str, str]:
        """What every log line of an approval function carries."""
        keys = {"environment": self.environment}
        if group:
            keys["model_package_group"] = group
        return keys

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ApprovalSettings:
        env = os.environ if environ is None else environ
        need = dict(zip(_REQUIRED, required(env, *_REQUIRED, set_by=SET_BY), strict=True))
        documents = bundled_json(env, MODELS_FILE, set_by=SET_BY)
        if not isinstance(documents, list) or not all(isinstance(item, Mapping) for item in documents):
            raise SettingsError(f"{MODELS_FILE} must be a JSON list of models (written by {SET_BY}): redeploy")
        models = tuple(ModelApproval.from_document(item) for item in documents)
        try:
            chain = Chain.parse(need[CHAIN])
            return cls(
                project=need[PROJECT],
                environment=need[ENVIRONMENT],
                chain=chain,
                models=models,
                registry_account=need[REGISTRY_ACCOUNT],
                registry_region=need[REGISTRY_REGION],
                signing_key_id=need[SIGNING_KEY],
                state_table=need[STATE_TABLE],
                history_table=need[HISTORY_TABLE],
                sender_email=need[SENDER],
                api_url=need[API_URL].rstrip("/"),
                next_event_bus=env.get(NEXT_EVENT_BUS, "").strip() or None,
            )
        except ValueError as error:  # an environment outside the chain, an empty chain
            raise SettingsError(str(error)) from None

    def environ(self) -> dict[str, str]:
        """With `bundled_files()`, the inverse of from_environ (tests, the demo and the CDK stack use it)."""
        values = {
            PROJECT: self.project,
            ENVIRONMENT: self.environment,
            CHAIN: self.chain.value(),
            REGISTRY_ACCOUNT: self.registry_account,
            REGISTRY_REGION: self.registry_region,
            SIGNING_KEY: self.signing_key_id,
            STATE_TABLE: self.state_table,
            HISTORY_TABLE: self.history_table,
            SENDER: self.sender_email,
            API_URL: self.api_url,
        }
        if self.next_event_bus:
            values[NEXT_EVENT_BUS] = self.next_event_bus
        return values

    def bundled_files(self) -> dict[str, str]:
        """{file name: text} the stack ships at the root of the approval functions' code package."""
        return {MODELS_FILE: json.dumps([model.document() for model in self.models], separators=(",", ":"))}


def environ_size(environ: Mapping[str, str]) -> int:
    """Bytes Lambda counts against LAMBDA_ENVIRONMENT_LIMIT (keys and values, UTF-8)."""
    return sum(len(key.encode()) + len(value.encode()) for key, value in environ.items())


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
