"""One moto account holding the registry and four environments' approval resources, a local IdP with people,
and each environment's approval API (the real handler routing) behind a local API Gateway."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import boto3
import pytest
from moto import mock_aws

from lambdas import approval_api, post_inference, request_approval
from modelgate.approval.services import Services
from modelgate.approval.settings import SignInSettings
from modelgate.environments import ENVIRONMENTS
from modelgate.evaluation_report import CustomerMetrics, EvaluationReport
from modelgate.jwt_auth import JwksCache
from sandbox.api_gateway import LocalApiGateway, Route
from sandbox.approval import provision, register_version, registry_event, sent_emails
from sandbox.atomic_dynamodb import atomic_dynamodb
from sandbox.oidc_issuer import LocalIssuer

ACCOUNT, REGION = "123456789012", "eu-west-1"
PROJECT, GROUP = "modelgate", "energy-forecast"
CLIENT_ID = "modelgate-approval"
APPROVERS = {env: (f"approvers-{env}@example.com",) for env in ENVIRONMENTS}
GROUPS = {"dev": "modelgate-approvers", "test": "modelgate-approvers", "uat": "modelgate-approvers"}
GROUPS["prod"] = "modelgate-approvers-prod"
EVALUATION = EvaluationReport.from_customers(
    model_package_group=GROUP,
    window=168,
    horizon=24,
    holdout_hours=168,
    per_customer=[
        CustomerMetrics(
            "c0001", mape=0.071, rmse=1.2, baseline_mape=0.1, baseline_rmse=1.9, mape_ratio=0.71, points=168
        ),
        CustomerMetrics(
            "c0002", mape=0.091, rmse=2.2, baseline_mape=0.12, baseline_rmse=2.8, mape_ratio=0.76, points=168
        ),
    ],
).to_json()  # the training pipeline's evaluation report (modelgate.evaluation_report): mean MAPE 0.081


@dataclass
class Environment:
    name: str
    services: Services
    api: LocalApiGateway
    runtime: approval_api.Runtime

    @property
    def settings(self):
        return self.services.settings


@dataclass
class World:
    session: boto3.Session
    issuer: LocalIssuer
    bucket: str
    envs: dict[str, Environment] = field(default_factory=dict)
    queue_url: str = ""

    # -- the registry ------------------------------------------------------------------------------------------
    def register(self, registered_by: str | None = "bob@example.com") -> str:
        return register_version(
            self.session, group=GROUP, bucket=self.bucket, registered_by=registered_by, evaluation=EVALUATION
        )

    def describe(self, arn: str) -> dict:
        return self.session.client("sagemaker").describe_model_package(ModelPackageName=arn)

    def registry_event(self, arn: str) -> dict:
        return registry_event(arn, GROUP, ACCOUNT, REGION)

    # -- the Lambdas -------------------------------------------------------------------------------------------
    def request(self, env: str, event: dict) -> dict:
        return request_approval.handle(event, self.envs[env].services)

    def post_inference(self, env: str, event: dict) -> dict:
        return post_inference.handle(event, self.envs[env].services)

    def promotion_events(self) -> list[dict]:
        """Events the post-inference Lambdas (or the CLI) put on the buses, as the target rule delivers them."""
        sqs = self.session.client("sqs")
        found = []
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    # -- what the world looks like ---------------------------------------------------------------------------
    def emails(self):
        return sent_emails(ACCOUNT, REGION)

    def parameter(self, env: str) -> dict | None:
        try:
            value = self.session.client("ssm").get_parameter(Name=f"/{PROJECT}/{GROUP}/{env}")["Parameter"]["Value"]
        except self.session.client("ssm").exceptions.ParameterNotFound:
            return None
        return json.loads(value)

    def history(self, env: str):
        from modelgate.approval.history import read_history

        return read_history(self.session.client("dynamodb"), self.envs[env].settings.history_table, GROUP)

    def snapshot(self, arn: str) -> tuple:
        """Everything a decision could change, to assert that a refusal changed nothing."""
        described = self.describe(arn)
        return (
            described["ModelApprovalStatus"],
            described.get("CustomerMetadataProperties"),
            tuple(json.dumps(self.parameter(env), sort_keys=True) for env in ENVIRONMENTS),
            tuple(len(self.history(env)) for env in ENVIRONMENTS),
        )


@pytest.fixture
def world():
    with mock_aws(), atomic_dynamodb(), LocalIssuer(client_ids=(CLIENT_ID,)) as issuer:
        session = boto3.Session(region_name=REGION)
        issuer.add_user("alice", "alice@example.com", ["modelgate-approvers"])
        issuer.add_user("bob", "bob@example.com", ["modelgate-approvers"])  # registers models
        issuer.add_user("carol", "carol@example.com", ["data-scientists"])  # not an approver
        issuer.add_user("dave", "dave@example.com", ["modelgate-approvers-prod", "modelgate-approvers"])
        bucket = "modelgate-artifacts-local"
        session.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        world = World(session=session, issuer=issuer, bucket=bucket)

        # The rule each later environment's stack has: promotion requests for it -> (here) a queue to read.
        sqs, events = session.client("sqs"), session.client("events")
        world.queue_url = sqs.create_queue(QueueName="promotion-requests")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=world.queue_url, AttributeNames=["QueueArn"])["Attributes"]
        events.put_rule(
            Name="promotion-requests",
            EventPattern=json.dumps(
                {"source": ["modelgate.promotion"], "detail-type": ["ModelGate Promotion Requested"]}
            ),
        )
        events.put_targets(Rule="promotion-requests", Targets=[{"Id": "q", "Arn": queue_arn["QueueArn"]}])

        sign_in = SignInSettings(
            issuer=issuer.issuer,
            jwks_url=issuer.jwks_url,
            authorize_url=issuer.authorize_url,
            token_url=issuer.token_url,
            client_id=CLIENT_ID,
        )
        bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
        gateways = []
        try:
            for env in ENVIRONMENTS:
                holder: dict = {}
                api = LocalApiGateway(
                    [
                        Route(method, resource, lambda event, context, h=holder: approval_api.route(h["rt"], event))
                        for method, resource in (
                            ("GET", "/links/{action}"),
                            ("POST", "/links/{action}"),
                            ("GET", "/auth/callback"),
                        )
                    ]
                ).__enter__()
                gateways.append(api)
                settings = provision(
                    session,
                    project=PROJECT,
                    group=GROUP,
                    environment=env,
                    registry_account=ACCOUNT,
                    registry_region=REGION,
                    api_url=api.url,
                    approver_emails=APPROVERS[env],
                    approvers_group=GROUPS[env],
                    next_event_bus=None if env == "prod" else bus,
                )
                services = Services.from_session(settings, session)
                holder["rt"] = approval_api.Runtime(services, sign_in, JwksCache(url=issuer.jwks_url))
                world.envs[env] = Environment(env, services, api, holder["rt"])
            yield world
        finally:
            # In parallel: each stand-in's shutdown waits for its server loop's poll interval.
            with ThreadPoolExecutor(len(gateways) or 1) as pool:
                list(pool.map(lambda api: api.__exit__(None, None, None), gateways))
