"""The approval workflow of a deployed local world (sandbox.world.LocalWorld), as the approval tests drive it.

`LocalApprovalWorkflow(world)` reads everything from what was deployed: each environment's settings are those its
template gives its approval functions, the registry is the first environment's model package groups, the
versions' reports go to its artifacts bucket, the e-mails are what the local SES sent. The approval API is the
world's local API Gateway with the template's routes; the asynchronous functions (request-approval,
post-inference) are called through their real `handle` functions with the settings of their template and the
credentials of their own execution role (the world runs them in this process, so tests can race requests and
patch a function's clock). Promotion requests put on a later environment's bus are taken from that bus's rule,
as EventBridge would deliver them to that environment's request-approval function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelgate.approval.history import Decision, read_history
from modelgate.approval.model_versions import parse_model_package_arn
from modelgate.approval.services import Services
from modelgate.approval.settings import ApprovalSettings, ModelApproval
from sandbox.api_gateway import LocalApiGateway
from sandbox.approval import SentEmail, register_version, registry_event, sent_emails
from sandbox.world import SIGN_IN_CLIENT, ApprovalFunctions, LocalWorld


@dataclass(frozen=True)
class LocalEnvironment:
    name: str
    functions: ApprovalFunctions
    api: LocalApiGateway

    @property
    def services(self) -> Services:
        """The approval API function's services (its role's clients): what the pages and decisions use."""
        return self.functions.api_services

    @property
    def request_services(self) -> Services:
        return self.functions.request_services

    @property
    def post_inference_services(self) -> Services:
        return self.functions.post_inference_services

    @property
    def runtime(self):
        return self.functions.runtime

    @property
    def settings(self) -> ApprovalSettings:
        return self.services.settings


class LocalApprovalWorkflow:
    def __init__(self, world: LocalWorld) -> None:
        self.world = world
        self.chain = world.chain
        self.project = world.project
        first = world.envs[self.chain.first]
        self.session: Any = first.account  # the operator of the registry's account: the harness's own calls
        self.account, self.region = first.account.account, first.account.region
        self.bucket = first.stacks["Storage"].physical_id("Artifacts")
        self.client_id = SIGN_IN_CLIENT

    @property
    def issuer(self):
        return self.world.issuer

    @property
    def envs(self) -> dict[str, LocalEnvironment]:
        """Each deployed environment's approval functions (rebuilt by the world's reset)."""
        return {
            name: LocalEnvironment(name, self.world.approval_functions(name), env.approval_api)
            for name, env in self.world.envs.items()
        }

    @property
    def models(self) -> dict[str, tuple[ModelApproval, ...]]:
        return {name: env.settings.models for name, env in self.envs.items()}

    @property
    def groups(self) -> tuple[str, ...]:
        return self.envs[self.chain.first].settings.groups

    @property
    def group(self) -> str:
        """The first model's group: what the one-model helpers default to."""
        return self.groups[0]

    def model(self, name_or_group: str, env: str | None = None) -> ModelApproval:
        for model in self.models[env or self.chain.first]:
            if name_or_group in (model.model, model.group):
                return model
        raise KeyError(f"no model {name_or_group!r}; this world has {', '.join(self.groups)}")

    # -- the registry ----------------------------------------------------------------------------------------
    def register(
        self,
        registered_by: str | None = "bob@example.com",
        evaluation: dict | str | None = None,
        group: str | None = None,
    ) -> str:
        """Register a version of `group` (default: the first model's), as the training pipeline does."""
        return register_version(
            self.session,
            group=group or self.group,
            bucket=self.bucket,
            registered_by=registered_by,
            chain=self.chain,
            evaluation=evaluation,
        )

    def describe(self, arn: str) -> dict:
        return self.session.client("sagemaker").describe_model_package(ModelPackageName=arn)

    def registry_event(self, arn: str) -> dict:
        return registry_event(arn, self.group_of(arn), self.account, self.region)

    def group_of(self, arn: str) -> str:
        """The configured group an ARN is a version of (ARNs spell groups in lower case), else as the ARN does."""
        lowered = parse_model_package_arn(arn)[2]
        return next((group for group in self.groups if group.lower() == lowered), lowered)

    # -- the asynchronous Lambdas ----------------------------------------------------------------------------
    def request(self, env: str, event: dict) -> dict:
        return self.world.approval_functions(env).request(event)

    def post_inference(self, env: str, event: dict) -> dict:
        return self.world.approval_functions(env).post_inference(event)

    def promotion_events(self) -> list[dict]:
        """Promotion requests put on the buses since the last call, as a target environment's rule receives them."""
        return self.world.take_promotion_events()

    def deliver_promotions(self) -> int:
        """Hand every pending promotion request to its target environment's request-approval Lambda."""
        events = self.promotion_events()
        for event in events:
            self.request(event["detail"]["target_environment"], event)
        return len(events)

    # -- what the world looks like ---------------------------------------------------------------------------
    def emails(self) -> list[SentEmail]:
        return sent_emails(self.account, self.region)

    def parameter(self, env: str, group: str | None = None) -> dict | None:
        ssm = self.session.client("ssm")
        try:
            value = ssm.get_parameter(Name=f"/{self.project}/{group or self.group}/{env}")["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            return None
        return json.loads(value)

    def history(self, env: str, group: str | None = None) -> list[Decision]:
        table = self.envs[env].settings.history_table
        return read_history(self.session.client("dynamodb"), table, group or self.group)

    def snapshot(self, arn: str) -> tuple:
        """Everything a decision could change (every model's), to show that a refusal changed nothing."""
        described = self.describe(arn)
        return (
            described["ModelApprovalStatus"],
            described.get("CustomerMetadataProperties"),
            tuple(json.dumps(self.parameter(env, g), sort_keys=True) for env in self.chain for g in self.groups),
            tuple(len(self.history(env, g)) for env in self.chain for g in self.groups),
        )
