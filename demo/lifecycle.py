"""The whole ModelGate lifecycle on loopback: the synthesized stages deployed into a local AWS (moto server),
the pipeline's own step scripts, the real Lambda handlers (each in its own process, with the environment its
template gives it), the approval e-mails and links, a real Triton behind the multi-model endpoint stand-in, and
the promotion along the config's chain, for every model of the config (the demo's variant has two, the second
with a quorum of 2 in the last environment).

Only what cannot exist on a laptop is stood in for, each by one sandbox module the tests use too:
AWS APIs (sandbox.aws), CloudFormation (sandbox.cloudformation), EventBridge's Lambda targets and the events AWS
services emit on their own (sandbox.event_bridge, sandbox.service_events), API Gateway (sandbox.api_gateway with
the routes of the templates, sandbox.rest_api), the company's identity provider and a SaaS app's token issuer
(sandbox.oidc_issuer), the SageMaker endpoint (sandbox.multi_model_endpoint on sandbox.triton).
Every environment lives in one local account (the demo's config variant, demo.local_config): moto keeps
accounts apart, so cross-account calls cannot be played locally; the multi-account wiring is covered by the
template tests.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from infra.config import ModelGateConfig, ModelProject
from infra.triton_images import image_uri
from modelgate.approval.events import INFERENCE_DETAIL_TYPE, INFERENCE_SOURCE
from modelgate.model_repository import ENSEMBLE_INPUT, ENSEMBLE_OUTPUT, ENSEMBLE_P10, ENSEMBLE_P90, WINDOW
from modelgate.parameters import ApprovedModel, parameter_name
from modelgate.serving import settings as serving_names
from pipelines import datagen
from pipelines.local_runner import LocalRunResult, LocalRunSettings, LocalStepError, run_pipeline
from pipelines.steps import paths as step_paths
from pipelines.steps.series import read_curated
from sandbox import iam as local_iam
from sandbox import lambda_zygote
from sandbox.api_gateway import LocalApiGateway
from sandbox.approval import ApproverBrowser, SentEmail, sent_emails, write_outbox
from sandbox.aws import LocalAws
from sandbox.cloudformation import DeployedStack
from sandbox.event_bridge import Delivery
from sandbox.pipeline_jobs import SageMakerJobs
from sandbox.rest_api import routes_from_template
from sandbox.service_events import ServiceEvents
from sandbox.triton import LocalTriton
from sandbox.world import LocalWorld

SIGN_IN_CLIENT = "modelgate-approval"
REGISTERED_BY = "bob@example.com"  # the data scientist who runs the pipeline (approvers must be someone else)


class DemoError(RuntimeError):
    """A step of the lifecycle did not do what it should; the message says which and where its log is."""


@dataclass(frozen=True)
class DemoSettings:
    workdir: Path
    assembly: Path  # the synthesized demo config's cloud assembly
    auto_approve: bool = False
    customers: int = 24
    days: int = 35
    # On five weeks the closed-form models beat the best cheap peer (the four-week seasonal window average:
    # aggregate MAPE ratio 0.973 and 0.981 measured for the demo's two data sets), so config's
    # training.metric_threshold applies as it is.
    metric_threshold_margin: float = 0.0
    forecast_customers: int = 3
    approval_timeout_seconds: float = 1800.0


@dataclass
class EnvironmentOutcome:
    name: str
    approved_by: str | None = None
    deployed: dict | None = None
    forecasts: dict[str, list[float]] = field(default_factory=dict)
    unauthorized_status: int | None = None
    health: dict | None = None


@dataclass
class ModelOutcome:
    """One model's way through the chain."""

    name: str
    group: str
    model_package_arn: str
    pipeline: LocalRunResult
    environments: dict[str, EnvironmentOutcome]
    registry_status: str = ""
    parameters: dict[str, ApprovedModel | None] = field(default_factory=dict)
    history: dict[str, int] = field(default_factory=dict)  # decisions (counted approvals too) per environment
    status_table: str = ""


@dataclass
class DemoOutcome:
    model_package_arn: str  # the first model's (the one-model fields below are the first model's too)
    pipeline: LocalRunResult
    environments: dict[str, EnvironmentOutcome]
    emails: list[SentEmail]
    outbox: list[Path]
    deliveries: list[Delivery]
    status_table: str
    registry_status: str
    parameters: dict[str, ApprovedModel]
    history: dict[str, int]
    iam_denials: list[str] = field(default_factory=list)  # requests the local IAM refused (none when all is granted)
    models: dict[str, ModelOutcome] = field(default_factory=dict)  # every model's, by name


def _people(config: ModelGateConfig) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Approvers at the local identity provider: alice approves where the first environment's group decides, dave
    and erin everywhere (the shipped config's last environment has its own group; a quorum of 2 needs two)."""
    groups = {m.environments[env].approvers.group for m in config.models for env in config.chain}
    common = config.environments[config.chain.first].approvers.group
    return {
        "alice": ("alice", "alice@example.com", (common,)),
        "dave": ("dave", "dave@example.com", tuple(sorted(groups))),
        "erin": ("erin", "erin@example.com", tuple(sorted(groups))),
        "bob": ("bob", REGISTERED_BY, ("data-scientists",)),
    }


def _approvers_for(config: ModelGateConfig, model: ModelProject, env: str) -> list[str]:
    """As many distinct people (never the registrant) as the model's quorum in `env` needs, first choice first."""
    approvers = model.environments[env].approvers
    members = [name for name, (_, _, groups) in _people(config).items() if approvers.group in groups and name != "bob"]
    if len(members) < approvers.quorum:
        raise DemoError(f"{model.name} needs {approvers.quorum} approvers in {env}; the demo has {members}")
    return members[: approvers.quorum]


def label(model: ModelProject) -> str:
    """How the e-mails name a model (modelgate.approval.emails.label)."""
    group = model.model_package_group
    return group if model.name == group else f"{model.name} ({group})"


class Lifecycle:
    def __init__(self, config: ModelGateConfig, settings: DemoSettings, say=print) -> None:
        self.config = config
        self.settings = settings
        self.say = say
        self.project = config.project.name
        self.chain = config.chain
        self.first = config.environments[self.chain.first]
        self.stacks: dict[str, dict[str, DeployedStack]] = {}
        self.outcomes = {m.name: {env: EnvironmentOutcome(env) for env in self.chain} for m in config.models}
        self._seen_emails = 0
        self._pending: list[SentEmail] = []  # e-mails read from the outbox, not yet acted on
        self._outbox: list[Path] = []

    # -- the local world -------------------------------------------------------------------------------------
    def run(self) -> DemoOutcome:
        with contextlib.ExitStack() as stack:
            stack.callback(lambda_zygote.stop)  # last: after every function has stopped, whatever is left
            aws = stack.enter_context(LocalAws(self.first.region))
            self.account = aws.account(self.first.account)
            self._deploy()
            self._start_services(stack)
            self.service_events.baseline()
            # The models' pipelines are independent (each its own data, jobs and registry group): run them side by
            # side, as two SageMaker pipeline executions would be.
            with ThreadPoolExecutor(max_workers=len(self.config.models)) as pool:
                runs = {model.name: pool.submit(self._train_and_register, model) for model in self.config.models}
                results = {name: run.result() for name, run in runs.items()}
            self._settle()
            for env in self.chain:
                for model in self.config.models:
                    self._approve(env, model, results[model.name].model_package_arn)
                    self._serve(env, model, results[model.name])
            return self._outcome(results)
        raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions here

    def _deploy(self) -> None:
        self.say(f"\n== 3. Deploy the {len(self.chain)} stages into a local AWS account ({self.account.account}, moto)")

        def deployed(env: str, stacks: dict[str, DeployedStack], seconds: float) -> None:
            created = sum(len(s.physical_ids) for s in stacks.values())
            skipped = sum(len(s.skipped) for s in stacks.values())
            self.say(
                f"   {env:<5} {', '.join(stacks)}: {created} resources created, {skipped} AWS-only"
                f" (alarms, WAF, API Gateway...) stood in for or skipped  [{seconds:.1f} s]"
            )

        # The one local world (sandbox.world), on the local AWS this run started: the tests deploy the same way.
        self.world = LocalWorld(
            self.settings.assembly,
            self.config,
            people=tuple(_people(self.config).values()),
            log_dir=self.settings.workdir / "logs",
            audience=self.first.api.jwt.audience,
            aws=self.account.aws,
            on_deployed=deployed,
        )
        self.world.deploy()
        self.stacks = {env: self.world.envs[env].stacks for env in self.chain}

    def _start_services(self, stack: contextlib.ExitStack) -> None:
        # The world's identity provider, functions (each in its own process, as its role), EventBridge rules and
        # approval APIs (the template's routes); the serving side (Triton, endpoints, inference APIs) is the demo's.
        self.world.start()
        stack.callback(self.world.close)
        self.issuer = self.world.issuer
        self.functions = self.world.functions[self.account.account]
        self.bridge = self.world.bridges[self.account.account]
        self.service_events = ServiceEvents(self.account, self.bridge.put, parameter_prefix=f"/{self.project}/")
        self.triton = stack.enter_context(LocalTriton(self.settings.workdir / "triton"))
        self.approval_apis: dict[str, LocalApiGateway] = {env: self.world.envs[env].approval_api for env in self.chain}
        self.inference_apis: dict[str, LocalApiGateway] = {}
        self.endpoints: dict[str, Any] = {}  # per environment: every model's endpoint behind one runtime URL
        for env in self.chain:
            serving = self.stacks[env]["Serving"]

            # Every model's endpoint the template declares (records in the local SageMaker), each loading from its
            # model's ModelDataUrl as its execution role; one local Triton serves them all. (Per-group serving:
            # modelgate.serving's InferenceSettings and sandbox's LocalSageMakerRuntime, from r-serve's branch.)
            from modelgate.serving.settings import InferenceSettings
            from sandbox.multi_model_endpoint import LocalSageMakerRuntime

            served = InferenceSettings.from_environ(serving.function("InferenceApiInvoke").environment).models
            runtime = LocalSageMakerRuntime.of_endpoints(
                self.triton, [m.endpoint_name for m in served], self.account.client("sagemaker"), self._role_s3
            )
            self.endpoints[env] = stack.enter_context(runtime)
            self.functions.override(
                serving,
                **runtime.environ(),
                **{
                    serving_names.JWT_ISSUER: self.issuer.issuer,
                    serving_names.JWT_AUDIENCE: self.issuer.audience,
                    serving_names.JWKS_URL: self.issuer.jwks_url,
                },
            )
            api = stack.enter_context(LocalApiGateway([]))
            api.routes = routes_from_template(serving, self.functions.handler(serving.name))
            self.inference_apis[env] = api
        self.say(
            f"   EventBridge: {len(self.bridge.subscriptions)} rules deliver to their Lambda functions;"
            f" identity provider and token issuer at {self.issuer.issuer}; Triton at {self.triton.url}"
        )

    def _role_s3(self, role_arn: str) -> Any:
        """S3 as an endpoint's model execution role: SageMaker loads the archives with it."""
        return self.account.assume(role_arn, "sagemaker.amazonaws.com", session_name="SageMaker").client("s3")

    def _settle(self) -> list[Delivery]:
        """Let every consequence happen: AWS service events, rule deliveries, the events those put, ..."""
        delivered: list[Delivery] = []
        for _ in range(20):
            self.service_events.poll()
            batch = self.bridge.pump()
            for delivery in batch:
                name = delivery.subscription.function
                what = f"{delivery.event['source']} / {delivery.event['detail-type']}"
                if delivery.error is not None:
                    log = self.functions.function(delivery.subscription.stack, name).name
                    logs = self.settings.workdir / "logs" / f"{log}.log"
                    raise DemoError(f"{what} -> {name} failed: {delivery.error} (log: {logs})")
                self.say(f"   event {what} -> {delivery.subscription.stack}/{name}: {_short(delivery.result)}")
            delivered += batch
            if not batch:
                return delivered
        raise DemoError("events keep triggering events: stopped after 20 rounds")

    # -- 4. the pipeline -------------------------------------------------------------------------------------
    def threshold(self, model: ModelProject) -> float:
        training = model.environments[self.chain.first].training
        return round(training.metric_threshold + self.settings.metric_threshold_margin, 4)

    def _pipeline_stack(self, model: ModelProject) -> DeployedStack:
        """The model's pipeline stack in the first environment (one per model: `Pipeline-<model>`)."""
        stacks = self.stacks[self.chain.first].values()
        found = [s for s in stacks if s.name.endswith(f"-Pipeline-{model.name}")] or [
            s for s in stacks if s.name.endswith("-Pipeline")
        ]
        if not found:
            raise DemoError(f"no pipeline stack of {model.name} in {self.chain.first}: {[s.name for s in stacks]}")
        return found[0]

    def _train_and_register(self, model: ModelProject) -> LocalRunResult:
        group, first = model.model_package_group, model.environments[self.chain.first]
        self.say(f"\n== 4. {model.name}: generate data, run the pipeline's step scripts, register in {group}")
        artifacts = self.stacks[self.chain.first]["Storage"].physical_id("Artifacts")
        run_id = datetime.now(UTC).strftime("demo-%Y%m%dT%H%M%S")
        index = self.config.models.index(model)
        # Each model its own data; later models train on half the customers, so two models keep the demo short.
        customers = self.settings.customers if index == 0 else max(4, self.settings.customers // 2)
        settings = LocalRunSettings(
            work_dir=self.settings.workdir / "pipeline" / model.name,
            model_package_group=group,
            dataset=datagen.DatasetSpec(customers=customers, days=self.settings.days, seed=7 + index),
            metric_threshold=self.threshold(model),
            image_uri=image_uri(first.region, first.serving.triton_version),
            model_data_url=f"s3://{artifacts}/models/{group}/{run_id}/",
            registered_by=REGISTERED_BY,
            inference_instance_types=(first.serving.instance_type,),
            jobs=SageMakerJobs(self.account, self._pipeline_stack(model)),  # each step as its deployed job role
            progress=False,  # the pipelines run side by side: each step's output goes to its log, not the console
        )
        try:
            result = run_pipeline(settings, sagemaker=self.account.client("sagemaker"), s3=self.account.client("s3"))
        except LocalStepError as error:
            raise DemoError(f"{model.name}'s pipeline: {error}") from None
        if result.status != "registered":
            raise DemoError(f"{model.name}'s pipeline did not register a version: {result.failure}")
        aggregate = result.evaluation.aggregate
        steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.seconds.items())
        self.say(
            f"   {model.name}: {result.prep_report.get('rows_written', 0):,} readings of {aggregate.customers}"
            f" customers; steps as their job roles: {steps}"
        )
        self.say(
            f"   registered {result.model_package_arn} as PendingManualApproval: {aggregate.customers} customers,"
            f" MAPE {aggregate.mape:.3f} vs {aggregate.baseline} {aggregate.baseline_mape:.3f}"
            f" (ratio {aggregate.mape_ratio:.3f} <= {self.threshold(model)}: config's threshold + the demo's margin)"
        )
        return result

    # -- 5. approval -----------------------------------------------------------------------------------------
    def _new_emails(self) -> list[SentEmail]:
        mails = sent_emails(self.account.account, self.account.region)
        fresh, self._seen_emails = mails[self._seen_emails :], len(mails)
        self._outbox += write_outbox(self.account.account, self.account.region, self.settings.workdir / "outbox")
        return fresh

    def _approve(self, env: str, model: ModelProject, arn: str) -> None:
        group, approvers = model.model_package_group, model.environments[env].approvers
        self.say(f"\n== {env}: approval of {model.name} ({group})")
        recipients = set(approvers.emails)
        self._pending += self._new_emails()  # e-mails about every model arrive together: each takes its own
        mails = [m for m in self._pending if f" {label(model)} v" in m.subject and recipients & set(m.recipients)]
        if len(mails) < approvers.quorum:
            raise DemoError(
                f"{len(mails)} approval e-mails about {model.name} reached the {env} approvers "
                f"({', '.join(sorted(recipients))}); its quorum there is {approvers.quorum}"
            )
        self._pending = [m for m in self._pending if m not in mails]
        people = _approvers_for(self.config, model, env)
        for mail, approver in zip(mails, people, strict=False):  # a quorum: distinct people, one link each
            link = mail.links()["approve"]
            self.say(f"   e-mail to {', '.join(sorted(set(mail.recipients)))}: {mail.subject!r}")
            self.say(f"   approve: {link}")
            if self.settings.auto_approve:
                browser = ApproverBrowser(approver)
                page = browser.open(link)
                if page.status != 200:
                    raise DemoError(f"the approval page answered {page.status}: {page.text()[:500]}")
                done = browser.submit(page)
                if done.status != 200:
                    raise DemoError(f"approving answered {done.status}: {done.text()[:500]}")
                self.say(f"   {approver} signed in and approved (--auto-approve)")
        if not self.settings.auto_approve:
            who = " and ".join(f"'{p}'" for p in people)
            self.say(f"   open the link(s), sign in as {who} (one link each), read the page and approve...")
            self._wait_for_decision(env, group, arn)
        self.outcomes[model.name][env].approved_by = self._parameter(env, group).approved_by
        # The model's own deploy function (one per model: `Model<Name>DeploymentDeploy...`) got the parameter change.
        deployed = [
            d.result
            for d in self._settle()
            if "DeploymentDeploy" in d.subscription.function and (d.result or {}).get("model_package_group") == group
        ]
        if not deployed:
            raise DemoError(f"approving for {env} did not deploy: no Parameter Store change reached the deploy Lambda")
        self.outcomes[model.name][env].deployed = deployed[-1]

    def _wait_for_decision(self, env: str, group: str, arn: str) -> None:
        deadline = time.monotonic() + self.settings.approval_timeout_seconds
        sagemaker = self.account.client("sagemaker")
        while time.monotonic() < deadline:
            model = self._parameter(env, group)
            if model is not None and model.model_package_arn == arn:
                return
            described = sagemaker.describe_model_package(ModelPackageName=arn)
            if described["ModelApprovalStatus"] == "Rejected":
                raise DemoError(f"version rejected for {env}: nothing to promote (that is a fine outcome too)")
            time.sleep(1)
        raise DemoError(f"no decision for {env} within {self.settings.approval_timeout_seconds:.0f} s")

    def _parameter(self, env: str, group: str) -> ApprovedModel | None:
        ssm = self.account.client("ssm")
        try:
            value = ssm.get_parameter(Name=parameter_name(self.project, group, env))["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            return None
        return ApprovedModel.from_json(value)

    # -- 6. serving and promotion ----------------------------------------------------------------------------
    def _serve(self, env: str, model: ModelProject, result: LocalRunResult) -> None:
        group, arn = model.model_package_group, result.model_package_arn
        outcome = self.outcomes[model.name][env]
        api = self.inference_apis[env]
        token = self.issuer.mint(subject="saas-app", scope="inference:invoke")
        status, health = _call(api.url + f"/groups/{group}/health", token=token, method="GET")
        if status != 200:
            raise DemoError(f"{env} /groups/{group}/health answered {status}: {health}")
        outcome.health = health
        self.say(f"   {model.name}'s endpoint: {_short(health)}")
        curated = read_curated(result.work_dir / "prep" / step_paths.PREP_CURATED)
        # Each of an endpoint's models loads on its first call (as on a SageMaker MME: seconds each here): later
        # environments forecast one customer and check that it is the first environment's forecast.
        first = self.outcomes[model.name][self.chain.first]
        count = self.settings.forecast_customers if env == self.chain.first else 1
        for index in range(min(count, len(curated))):
            customer = curated.customers[index]
            end = int(curated.lengths[index])
            history = curated.values[index, max(0, end - WINDOW) : end]  # a short history: NaN before it
            window = np.concatenate([np.full(WINDOW - len(history), np.nan, np.float32), history])
            readings = [None if math.isnan(x) else round(float(x), 4) for x in window]
            body = {"inputs": [{"name": ENSEMBLE_INPUT, "shape": [1, WINDOW], "datatype": "FP32", "data": readings}]}
            status, answer = _call(api.url + f"/groups/{group}/models/{customer}/invoke", body, token=token)
            if status != 200:
                raise DemoError(f"{env} forecast for {customer} answered {status}: {answer}")
            served = {o["name"]: o["data"] for o in answer["outputs"]}
            outcome.forecasts[customer] = served[ENSEMBLE_OUTPUT]
            shown = ", ".join(f"{v:.2f}" for v in served[ENSEMBLE_OUTPUT][:6])
            low, high = served[ENSEMBLE_P10][0], served[ENSEMBLE_P90][0]
            same = ""
            if env != self.chain.first:
                if not np.allclose(served[ENSEMBLE_OUTPUT], first.forecasts[customer], rtol=1e-5):
                    raise DemoError(f"{env} serves another forecast for {customer} than {self.chain.first}")
                same = f"; the same as in {self.chain.first}: the version approved there"
            self.say(
                f"   forecast {customer} (next 24 h, kWh): {shown}, ... (first hour P10-P90 {low:.2f}-{high:.2f}{same})"
            )
        customer = curated.customers[0]
        outcome.unauthorized_status, _ = _call(
            api.url + f"/groups/{group}/models/{customer}/invoke", {"inputs": []}, token=None
        )
        self.say(f"   without a JWT: HTTP {outcome.unauthorized_status}")
        # A SaaS inference run reports that it finished: the post-inference Lambda asks the next approvers.
        following = self.chain.next(env)
        self.bridge.put(
            {
                "source": INFERENCE_SOURCE,
                "detail-type": INFERENCE_DETAIL_TYPE,
                "detail": {
                    "run_id": f"demo-{group}-{env}-{int(time.time())}",
                    "environment": env,
                    "model_package_arn": arn,
                    "metrics": {"customers_scored": len(outcome.forecasts), "http_401_without_jwt": 1},
                },
            }
        )
        asks = f"asks {following} to promote" if following else "(last environment: nothing to promote)"
        self.say(f"   inference run reported: post-inference {asks}")
        self._settle()

    # -- what the world looks like at the end ----------------------------------------------------------------
    def _outcome(self, results: dict[str, LocalRunResult]) -> DemoOutcome:
        self._new_emails()
        dynamodb = self.account.client("dynamodb")
        models = {}

        def status_of(group: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "modelgate", "status", "--model", group, "--config", self.config.source,
                 "--project", self.project, "--registry-account", self.account.account,
                 "--registry-region", self.account.region],
                capture_output=True, text=True, env=self.account.environ(PATH="/usr/bin:/bin"), timeout=120,
                cwd=Path(__file__).resolve().parent.parent,
            )  # fmt: skip

        groups = [model.model_package_group for model in self.config.models]
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:  # the CLI as a person runs it, one per model
            statuses = dict(zip(groups, pool.map(status_of, groups), strict=True))
        for model in self.config.models:
            group, result = model.model_package_group, results[model.name]
            status = statuses[group]
            if status.returncode != 0:
                raise DemoError(f"modelgate status --model {group} failed: {status.stderr}")
            described = self.account.client("sagemaker").describe_model_package(
                ModelPackageName=result.model_package_arn
            )
            history = {}
            for env in self.chain:
                table = self.stacks[env]["Storage"].physical_id("ApprovalHistory")
                history[env] = dynamodb.query(
                    TableName=table,
                    KeyConditionExpression="model_package_group = :g",
                    ExpressionAttributeValues={":g": {"S": group}},
                    Select="COUNT",
                )["Count"]
            models[model.name] = ModelOutcome(
                name=model.name,
                group=group,
                model_package_arn=result.model_package_arn,
                pipeline=result,
                environments=self.outcomes[model.name],
                registry_status=described["ModelApprovalStatus"],
                parameters={env: self._parameter(env, group) for env in self.chain},
                history=history,
                status_table=status.stdout,
            )
        first = models[self.config.models[0].name]
        return DemoOutcome(
            model_package_arn=first.model_package_arn,
            pipeline=first.pipeline,
            environments=first.environments,
            emails=sent_emails(self.account.account, self.account.region),
            outbox=self._outbox,
            deliveries=self.bridge.deliveries,
            status_table="\n".join(f"-- {m.name} ({m.group})\n{m.status_table}" for m in models.values()),
            registry_status=first.registry_status,
            parameters=first.parameters,
            history=first.history,
            iam_denials=[str(denial) for denial in local_iam.DENIALS],
            models=models,
        )


def _short(value: object, limit: int = 160) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call(url: str, body: dict | None = None, *, token: str | None, method: str = "POST") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback stand-in
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            return error.code, json.loads(payload or b"{}")
        except ValueError:
            return error.code, {"raw": payload.decode(errors="replace")}
