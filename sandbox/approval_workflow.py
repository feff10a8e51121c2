"""The approval workflow of every environment of a promotion chain, for every model, on loopback (demo and tests).

`with LocalApprovalWorkflow.from_config(session, config, ...) as workflow:` (or the constructor, with each
environment's ModelApproval tuple) starts a local identity provider with the given people, provisions each
environment's approval resources in the AWS stand-in behind `session` (in-process moto, or a
sandbox.aws.LocalAccount of the moto server), and serves each environment's approval API (the real handler
routing, lambdas.approval_api.route) on its own loopback port. The async Lambdas are called through their real
`handle` functions; promotion requests put on the bus are collected from a queue, as the target environment's
rule would deliver them. Everything is in one account (the registry and all environments), so the IAM and
cross-account parts are exercised by the template tests and the deployed-stack test instead.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lambdas import approval_api, post_inference, request_approval
from modelgate.approval.events import PROMOTION_DETAIL_TYPE, PROMOTION_SOURCE, promotion_bus_name
from modelgate.approval.history import Decision, read_history
from modelgate.approval.model_versions import parse_model_package_arn
from modelgate.approval.services import Services
from modelgate.approval.settings import ModelApproval, SignInSettings
from modelgate.approval.signin import SigningKeys
from modelgate.chain import Chain
from sandbox.api_gateway import LocalApiGateway, Route
from sandbox.approval import SentEmail, models_of, provision, register_version, registry_event, sent_emails
from sandbox.atomic_dynamodb import atomic_dynamodb
from sandbox.oidc_issuer import LocalIssuer

API_ROUTES = (
    ("GET", "/links/{action}"),
    ("HEAD", "/links/{action}"),
    ("POST", "/links/{action}"),
    ("GET", "/auth/callback"),
)


@dataclass
class LocalEnvironment:
    name: str
    services: Services
    api: LocalApiGateway
    runtime: approval_api.Runtime

    @property
    def settings(self):
        return self.services.settings


@dataclass
class LocalApprovalWorkflow:
    session: Any  # anything with .client(service): a boto3 Session under mock_aws, or a LocalAccount
    account: str
    region: str
    chain: Chain
    models: dict[str, tuple[ModelApproval, ...]]  # per environment of the chain: every model's approval settings
    project: str = "modelgate"
    people: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (username, e-mail, groups) at the local IdP
    bucket: str = "modelgate-artifacts-local"
    client_id: str = "modelgate-approval"
    issuer: LocalIssuer | None = None
    envs: dict[str, LocalEnvironment] = field(default_factory=dict)
    _queue_url: str = ""
    _stack: list = field(default_factory=list)

    @classmethod
    def from_config(cls, session: Any, config: Any, **kwargs: Any) -> LocalApprovalWorkflow:
        """The world of a loaded config (infra.config): its chain, its models, their approvers per environment."""
        return cls(session, chain=config.chain, models=models_of(config), project=config.project.name, **kwargs)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(model.group for model in self.models[self.chain.first])

    @property
    def group(self) -> str:
        """The first model's group: what the one-model helpers default to."""
        return self.groups[0]

    def model(self, name_or_group: str, env: str | None = None) -> ModelApproval:
        for model in self.models[env or self.chain.first]:
            if name_or_group in (model.model, model.group):
                return model
        raise KeyError(f"no model {name_or_group!r}; this world has {', '.join(self.groups)}")

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> LocalApprovalWorkflow:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        atomic = atomic_dynamodb()  # the stand-in must be as atomic as DynamoDB: the API serves on threads
        atomic.__enter__()
        self._stack.append(atomic)
        self.issuer = LocalIssuer(client_ids=(self.client_id,)).__enter__()
        self._stack.append(self.issuer)
        for username, email, groups in self.people:
            self.issuer.add_user(username, email, groups)
        s3 = self.session.client("s3")
        s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": self.region})
        sqs, events = self.session.client("sqs"), self.session.client("events")
        self._queue_url = sqs.create_queue(QueueName="modelgate-promotion-requests")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])["Attributes"]
        # Each later environment's promotion requests arrive on its own ModelGate bus, as in AWS.
        for env in self.chain.names[1:]:
            bus = promotion_bus_name(self.project, env)
            events.create_event_bus(Name=bus)
            events.put_rule(
                Name=f"{bus}-requests",
                EventBusName=bus,
                EventPattern=json.dumps({"source": [PROMOTION_SOURCE], "detail-type": [PROMOTION_DETAIL_TYPE]}),
            )
            events.put_targets(
                Rule=f"{bus}-requests", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn["QueueArn"]}]
            )
        sign_in = SignInSettings(
            issuer=self.issuer.issuer,
            jwks_url=self.issuer.jwks_url,
            authorize_url=self.issuer.authorize_url,
            token_url=self.issuer.token_url,
            client_id=self.client_id,
        )
        for env in self.chain:
            holder: dict = {}
            api = LocalApiGateway(
                [
                    Route(method, resource, lambda event, context, h=holder: approval_api.route(h["rt"], event))
                    for method, resource in API_ROUTES
                ]
            ).__enter__()
            self._stack.append(api)
            following = self.chain.next(env)
            settings = provision(
                self.session,
                project=self.project,
                environment=env,
                chain=self.chain,
                models=self.models[env],
                registry_account=self.account,
                registry_region=self.region,
                api_url=api.url,
                next_event_bus=None
                if following is None
                else f"arn:aws:events:{self.region}:{self.account}:event-bus/"
                f"{promotion_bus_name(self.project, following)}",
            )
            services = Services.from_session(settings, self.session)
            holder["rt"] = approval_api.Runtime(services, sign_in, SigningKeys(self.issuer.jwks_url))
            self.envs[env] = LocalEnvironment(env, services, api, holder["rt"])

    def __exit__(self, *exc: object) -> None:
        servers = [item for item in self._stack if isinstance(item, LocalApiGateway | LocalIssuer)]
        # In parallel: each server's shutdown waits for its loop's poll interval.
        with ThreadPoolExecutor(max(len(servers), 1)) as pool:
            list(pool.map(lambda server: server.__exit__(None, None, None), servers))
        for item in reversed(self._stack):
            if not isinstance(item, LocalApiGateway | LocalIssuer):
                item.__exit__(None, None, None)
        self._stack.clear()

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
        return request_approval.handle(event, self.envs[env].services)

    def post_inference(self, env: str, event: dict) -> dict:
        return post_inference.handle(event, self.envs[env].services)

    def promotion_events(self) -> list[dict]:
        """Promotion requests put on the bus since the last call, as a target environment's rule receives them."""
        sqs = self.session.client("sqs")
        found = []
        while batch := sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        return found

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
