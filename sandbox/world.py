"""One local world: a synthesized cloud assembly deployed into the local AWS, for the demo and the tests alike.

`with LocalWorld(assembly, config, people=...) as world:` starts the local AWS (moto's server, IAM enforced),
deploys every environment's stage from the templates (sandbox.cloudformation.deploy_stage; `stacks=` limits it to
the stacks a caller needs, e.g. Storage and Approval), and stands up what the templates point at but AWS itself
would run: the identity provider (sandbox.oidc_issuer), EventBridge delivering to the rules' Lambda targets
(sandbox.event_bridge), each environment's approval API behind a local API Gateway built from the template's
routes (sandbox.rest_api). Every function runs its real handler with the environment its template gives it and the
credentials of its own execution role, so a missing grant is AccessDenied as in AWS: in its own process
(`world.functions`, as the demo runs them) or, for the approval functions, in this process
(`in_process=True`: what the approval tests use, so they can race requests and patch clocks).

Deploying costs seconds per stack; `reset()` instead puts the data back as it was right after the deploy (table
items, parameters, registered versions, objects, e-mails, queued events), so tests share one deployed world.
`cached_synth(config_path)` synthesizes a config once per source tree (content-addressed under .build/), shared
by test processes and runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import iam as local_iam
from sandbox.api_gateway import LocalApiGateway
from sandbox.atomic_dynamodb import atomic_dynamodb
from sandbox.aws import LocalAccount, LocalAws
from sandbox.cloudformation import DeployedStack, LocalFunctionSpec, deploy_stage
from sandbox.deployed_functions import DeployedFunctions
from sandbox.event_bridge import LocalEventBridge, Subscription
from sandbox.oidc_issuer import LocalIssuer
from sandbox.rest_api import routes_from_template

ROOT = Path(__file__).resolve().parent.parent
# What a synthesized assembly depends on: the app's code and the inputs it bundles.
SYNTH_INPUTS = ("app.py", "cdk.json", "requirements.txt", "infra", "stacks", "lambdas", "modelgate", "pipelines")
SIGN_IN_CLIENT = "modelgate-approval"


# -- a cached synthesis ---------------------------------------------------------------------------------------
def _source_digest(config_path: Path) -> str:
    digest = hashlib.sha256(config_path.read_bytes())
    for name in SYNTH_INPUTS:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def cached_synth(config_path: str | Path, cache: Path | None = None) -> Path:
    """The cloud assembly of `config_path` (every stage, cdk-nag run), synthesized once per source tree.

    Keyed by the config file and every file synth reads, so a change anywhere synthesizes afresh; processes that
    ask at once (pytest-xdist workers) wait for the one that synthesizes."""
    from filelock import FileLock

    config_path = Path(config_path).resolve()
    cache = cache or ROOT / ".build" / "world-synth"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{config_path.stem}-{_source_digest(config_path)}"
    with FileLock(str(target) + ".lock"):
        if not (target / "manifest.json").exists():
            from infra.build.synth_report import synthesize  # aws_cdk + jsii: seconds to import

            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            synthesize(partial, context={"config": str(config_path)})
            partial.rename(target)
    return target


# -- the world ------------------------------------------------------------------------------------------------
@dataclass
class WorldEnvironment:
    """One environment of the chain as deployed: its account (the operator) and its stacks by id."""

    name: str
    account: LocalAccount
    stacks: dict[str, DeployedStack]
    approval_api: LocalApiGateway | None = None

    def stack(self, stack_id: str) -> DeployedStack:
        return self.stacks[stack_id]


@dataclass
class _Snapshot:
    """What existed right after the deploy, per account: reset() removes everything else."""

    parameters: set[str] = field(default_factory=set)
    objects: set[tuple[str, str]] = field(default_factory=set)
    model_package_groups: set[str] = field(default_factory=set)


class LocalWorld:
    def __init__(
        self,
        assembly: str | Path,
        config: Any,  # infra.config.ModelGateConfig of the assembly
        *,
        stacks: Collection[str] | None = None,
        environments: Collection[str] | None = None,
        edit: Callable[[str, dict], dict] | None = None,
        people: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
        in_process: bool = False,
        log_dir: Path | None = None,
        audience: str | None = None,
        hold: bool = True,
        aws: LocalAws | None = None,  # an already started local AWS (the demo's); else the world starts one
        on_deployed: Callable[[str, dict[str, DeployedStack], float], None] | None = None,  # (env, stacks, s)
    ) -> None:
        self.assembly = Path(assembly)
        self.config = config
        self.chain = config.chain
        self.project = config.project.name
        self.only = tuple(stacks) if stacks is not None else None
        self.environments = tuple(environments) if environments is not None else tuple(config.chain)
        self.edit = edit
        self.people = people
        self.in_process = in_process
        self.log_dir = log_dir
        self.audience = audience
        self.hold = hold
        self.aws: LocalAws | None = aws
        self.on_deployed = on_deployed
        self.envs: dict[str, WorldEnvironment] = {}
        self.issuer: LocalIssuer | None = None
        self.functions: dict[str, DeployedFunctions] = {}  # account -> its functions, each in its own process
        self.bridges: dict[str, LocalEventBridge] = {}  # account -> its rules' deliveries
        self._roles: dict[tuple[str, str], LocalAccount] = {}  # (account, role ARN) -> assumed, cached
        self._snapshots: dict[str, _Snapshot] = {}
        self._approval: dict[str, ApprovalFunctions] = {}
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> LocalWorld:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        gateways = [env.approval_api for env in self.envs.values() if env.approval_api is not None]
        with ThreadPoolExecutor(max(len(gateways), 1)) as pool:  # each shutdown waits for its poll interval
            list(pool.map(lambda gateway: gateway.__exit__(None, None, None), gateways))
        for env in self.envs.values():
            env.approval_api = None
        self._stack.close()

    def _start(self) -> None:
        self.deploy()
        self.start()

    def deploy(self) -> None:
        """Start the local AWS (unless given one) and deploy every environment's stage into it."""
        if self.aws is None:
            first = self.config.environments[self.chain.first]
            # hold=False (a test session's world): IAM enforcement and atomic DynamoDB only inside `use()`, so
            # that other tests of the process, with moto in-process, never see them.
            self.aws = self._stack.enter_context(LocalAws(first.region, enforce_iam=self.hold))
        for env in self.environments:
            account = self.aws.account(self.config.environments[env].account)
            stage = self.assembly / f"assembly-{self.project}-{env}"
            started = time.perf_counter()
            self.envs[env] = WorldEnvironment(env, account, deploy_stage(account, stage, self.edit, only=self.only))
            if self.on_deployed is not None:
                self.on_deployed(env, self.envs[env].stacks, time.perf_counter() - started)

    def start(self) -> LocalWorld:
        """Stand up what the deployed templates point at: the IdP, the rules' deliveries, the approval APIs.
        Stopped with the world (`with world:`, or `close()`)."""
        try:
            self._start_services()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.__exit__(None, None, None)

    def _start_services(self) -> None:
        if self.hold:
            self._stack.enter_context(atomic_dynamodb())  # the APIs serve on threads: DynamoDB's atomicity
        self.issuer = self._stack.enter_context(
            LocalIssuer(client_ids=(SIGN_IN_CLIENT,), **({"audience": self.audience} if self.audience else {}))
        )
        for username, mail, groups in self.people:
            self.issuer.add_user(username, mail, groups)
        for env in self.envs.values():
            key = env.account.account
            if key not in self.functions:
                self.functions[key] = DeployedFunctions(env.account, self.log_dir or ROOT / ".build" / "world-logs")
                self._stack.callback(self.functions[key].close)
                self.bridges[key] = LocalEventBridge(env.account, self._invoke_in(key))
        for env in self.envs.values():
            if "Approval" in env.stacks:
                self._serve_approval(env)
            for deployed in env.stacks.values():
                functions = self.functions[env.account.account]
                if deployed.name not in functions.stacks:
                    functions.add(deployed)
                self.bridges[env.account.account].subscribe(deployed)
        for account in self.functions:
            self._snapshots[account] = self._snapshot(self.aws.account(account))

    @contextlib.contextmanager
    def use(self) -> Iterator[LocalWorld]:
        """The world as AWS behaves (IAM enforced, DynamoDB atomic), for one test of a `hold=False` world."""
        if self.hold:
            yield self
            return
        with local_iam.Enforcing(), atomic_dynamodb():
            yield self

    def intact(self) -> bool:
        """False once moto's backends were reset under the world (an in-process mock_aws in the same process)."""
        from moto.dynamodb.models import dynamodb_backends

        env = self.envs[self.environments[0]]
        storage = env.stacks.get("Storage")
        if storage is None:
            return True
        resources = storage.template["Resources"]
        tables = [
            pid
            for logical, pid in storage.physical_ids.items()
            if resources.get(logical, {}).get("Type") in ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable")
        ]
        return all(name in dynamodb_backends[env.account.account][env.account.region].tables for name in tables)

    @property
    def sign_in(self):
        from modelgate.approval.settings import SignInSettings

        issuer = self.issuer
        return SignInSettings(issuer.issuer, issuer.jwks_url, issuer.authorize_url, issuer.token_url, SIGN_IN_CLIENT)

    def _serve_approval(self, env: WorldEnvironment) -> None:
        from modelgate.approval.settings import API_URL

        approval = env.stacks["Approval"]
        gateway = LocalApiGateway([]).__enter__()
        env.approval_api = gateway
        # The two things that cannot exist locally: the public API URL and the Cognito sign-in endpoints.
        self.functions[env.account.account].add(approval, **{API_URL: gateway.url, **self.sign_in.environ()})
        if self.in_process:
            gateway.routes = routes_from_template(approval, lambda logical: self._approval_route(env.name, logical))
        else:
            gateway.routes = routes_from_template(approval, self.functions[env.account.account].handler(approval.name))

    # -- functions -------------------------------------------------------------------------------------------
    def environment_of(self, env: str, stack_id: str, spec: LocalFunctionSpec) -> dict[str, str]:
        """The function's environment as the template gives it, with the world's local overrides."""
        functions = self.functions[self.envs[env].account.account]
        return {**spec.environment, **functions.overrides.get(self.envs[env].stacks[stack_id].name, {})}

    def function_environ(self, env: str, stack_id: str, function: str) -> dict[str, str]:
        """What Lambda gives the process of function `function` (logical id prefix): its template's environment
        with the world's overrides, the local endpoint and its execution role's credentials."""
        spec = self.envs[env].stacks[stack_id].function(function)
        return self.as_role(env, spec.role).environ(**self.environment_of(env, stack_id, spec))

    def as_role(self, env: str, role_arn: str, service: str = "lambda.amazonaws.com") -> LocalAccount:
        """The environment's account as `role_arn`, assumed the way `service` assumes it (cached: one STS call)."""
        account = self.envs[env].account
        key = (account.account, role_arn)
        if key not in self._roles:
            self._roles[key] = account.assume(role_arn, service, session_name=role_arn.rsplit("/", 1)[-1][:64])
        return self._roles[key]

    def approval_services(self, env: str, function: str):
        """modelgate.approval Services of the approval function `function` (logical id prefix, e.g.
        "RequestApproval"): its template's settings, clients as its execution role."""
        from modelgate.approval.services import Services
        from modelgate.approval.settings import ApprovalSettings

        spec = self.envs[env].stacks["Approval"].function(function)
        settings = ApprovalSettings.from_environ(self.environment_of(env, "Approval", spec))
        return Services.from_session(settings, self.as_role(env, spec.role))

    def _approval_route(self, env: str, logical: str) -> Callable:
        return lambda event, context=None: self.in_process_handler(env, logical)(event)

    def in_process_handler(self, env: str, logical: str) -> Callable[[dict], Any]:
        """The approval function `logical` of `env` called in this process (see ApprovalFunctions)."""
        return self.approval_functions(env).handler(logical)

    def approval_functions(self, env: str) -> ApprovalFunctions:
        """The in-process approval functions of `env` (rebuilt by reset(): tests patch their services)."""
        with self._lock:
            if env not in self._approval:
                self._approval[env] = ApprovalFunctions(self, env)
            return self._approval[env]

    def _invoke_in(self, account: str) -> Callable[[str, str, dict], Any]:
        def invoke(stack_name: str, logical: str, event: dict) -> Any:
            if self.in_process:
                for env in self.envs.values():
                    approval = env.stacks.get("Approval")
                    if env.account.account == account and approval is not None and approval.name == stack_name:
                        return self.in_process_handler(env.name, logical)(event)
            return self.functions[account].invoke(stack_name, logical, event)

        return invoke

    # -- events ----------------------------------------------------------------------------------------------
    def pump(self) -> list:
        """Deliver every event the rules matched to their functions (one round)."""
        return [delivery for bridge in self.bridges.values() for delivery in bridge.pump()]

    def _promotion_subscriptions(self) -> Iterator[tuple[LocalEventBridge, Subscription]]:
        """Taps of rules on a ModelGate promotion bus (not the default bus)."""
        for env in self.envs.values():
            approval = env.stacks.get("Approval")
            if approval is None:
                continue
            bridge = self.bridges[env.account.account]
            for subscription in bridge.subscriptions:
                if subscription.stack != approval.name:
                    continue
                logical = next(k for k, v in approval.physical_ids.items() if v == subscription.rule)
                if approval.template["Resources"][logical]["Properties"].get("EventBusName"):
                    yield bridge, subscription

    def take_promotion_events(self) -> list[dict]:
        """Promotion requests the next environments' rules matched since the last call, not delivered."""
        found = []
        for bridge, subscription in self._promotion_subscriptions():
            found += _drain(bridge.account.client("sqs"), subscription.queue_url)
        return found

    # -- reset -----------------------------------------------------------------------------------------------
    def _snapshot(self, account: LocalAccount) -> _Snapshot:
        snapshot = _Snapshot()
        ssm = account.client("ssm")
        for page in ssm.get_paginator("describe_parameters").paginate():
            snapshot.parameters |= {parameter["Name"] for parameter in page["Parameters"]}
        s3 = account.client("s3")
        for bucket in s3.list_buckets()["Buckets"]:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
                snapshot.objects |= {(bucket["Name"], item["Key"]) for item in page.get("Contents", [])}
        groups = account.client("sagemaker").list_model_package_groups(MaxResults=100)["ModelPackageGroupSummaryList"]
        snapshot.model_package_groups = {group["ModelPackageGroupName"] for group in groups}
        return snapshot

    def reset(self) -> None:
        """Back to the state right after the deploy, without a redeploy: every table emptied, parameters,
        objects and model package groups made since removed, registered versions and sent e-mails forgotten,
        queued events dropped, and the in-process functions' services rebuilt (tests patch their clocks)."""
        from moto.dynamodb.models import dynamodb_backends
        from moto.sagemaker.models import sagemaker_backends
        from moto.ses.models import ses_backends

        for account_id, snapshot in self._snapshots.items():
            account = self.aws.account(account_id)
            region = account.region
            for table in dynamodb_backends[account_id][region].tables.values():
                table.items.clear()
            ssm = account.client("ssm")
            extra = [
                parameter["Name"]
                for page in ssm.get_paginator("describe_parameters").paginate()
                for parameter in page["Parameters"]
                if parameter["Name"] not in snapshot.parameters
            ]
            for start in range(0, len(extra), 10):
                ssm.delete_parameters(Names=extra[start : start + 10])
            s3 = account.client("s3")
            for bucket in s3.list_buckets()["Buckets"]:
                name = bucket["Name"]
                keys = [
                    item["Key"]
                    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name)
                    for item in page.get("Contents", [])
                    if (name, item["Key"]) not in snapshot.objects
                ]
                for start in range(0, len(keys), 1000):
                    batch = [{"Key": key} for key in keys[start : start + 1000]]
                    s3.delete_objects(Bucket=name, Delete={"Objects": batch})
            sagemaker = sagemaker_backends[account_id][region]
            sagemaker.model_packages.clear()  # versions count from 1 again
            sagemaker.model_package_name_mapping.clear()
            for group in [g for g in sagemaker.model_package_groups if g not in snapshot.model_package_groups]:
                del sagemaker.model_package_groups[group]
            ses = ses_backends[account_id][region]
            ses.sent_messages.clear()
            ses.sent_message_count = 0
            bridge = self.bridges[account_id]
            sqs = account.client("sqs")
            for subscription in bridge.subscriptions:
                _drain(sqs, subscription.queue_url)
            bridge.deliveries.clear()
        with self._lock:
            self._approval.clear()
        local_iam.DENIALS.clear()


def _drain(sqs: Any, queue_url: str) -> list[dict]:
    found = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


class ApprovalFunctions:
    """One environment's three approval functions, called in this process with their real entry points
    (`request_approval.handle`, `post_inference.handle`, `approval_api.route`), each with the settings its template
    gives it and clients as its own execution role."""

    def __init__(self, world: LocalWorld, env: str) -> None:
        from lambdas import approval_api
        from modelgate.approval.settings import SignInSettings
        from modelgate.approval.signin import SigningKeys

        stack = world.envs[env].stacks["Approval"]
        self.env = env
        self.request_services = world.approval_services(env, "RequestApproval")
        # The chain's last environment has no post-inference function: there is nobody next to ask.
        has_post_inference = any(logical.startswith("PostInference") for logical in stack.functions)
        self.post_inference_services = world.approval_services(env, "PostInference") if has_post_inference else None
        self.api_services = world.approval_services(env, "ApprovalApi")
        spec = stack.function("ApprovalApi")

        sign_in = SignInSettings.from_environ(world.environment_of(env, "Approval", spec))
        self.runtime = approval_api.Runtime(self.api_services, sign_in, SigningKeys(sign_in.jwks_url))
        self._by_logical = {
            stack.function("RequestApproval").logical_id: self.request,
            spec.logical_id: self.api,
            **({stack.function("PostInference").logical_id: self.post_inference} if has_post_inference else {}),
        }

    def request(self, event: dict) -> dict:
        from lambdas import request_approval

        return request_approval.handle(event, self.request_services)

    def post_inference(self, event: dict) -> dict:
        from lambdas import post_inference

        if self.post_inference_services is None:
            raise LookupError(f"{self.env} deploys no post-inference function (the chain's last environment)")
        return post_inference.handle(event, self.post_inference_services)

    def api(self, event: dict) -> dict:
        from lambdas import approval_api

        return approval_api.route(self.runtime, event)

    def handler(self, logical: str) -> Callable[[dict], Any]:
        return self._by_logical[logical]
