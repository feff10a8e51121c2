"""The approval tests' world: tests/integration/approval/world.yaml synthesized (once per source tree:
sandbox.world.cached_synth) and its Storage and Approval stacks deployed into the local AWS (sandbox.world), one
account holding the registry and every environment, a local IdP with people, each environment's approval API
behind a local API Gateway with the template's routes, every function with its template's settings and its own
execution role (IAM enforced).

One deployed world per test process: each test starts from the state right after the deploy (`world.reset()`),
so no test sees another's versions, e-mails, decisions or parameters. The environments' names come from the
config's chain; the tests name them by position (FIRST, LAST, CHAIN[i]) or as the config spells them."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import load_config
from modelgate.evaluation_report import CustomerMetrics, EvaluationReport
from sandbox.approval_workflow import LocalApprovalWorkflow
from sandbox.world import LocalWorld, cached_synth

WORLD_CONFIG = Path(__file__).with_name("world.yaml")
CONFIG = load_config(WORLD_CONFIG)
CHAIN = CONFIG.chain
FIRST, LAST = CHAIN.first, CHAIN.last
ACCOUNT, REGION = CONFIG.environments[FIRST].account, CONFIG.environments[FIRST].region
PROJECT = CONFIG.project.name
ENERGY, QUORUM = CONFIG.models  # QUORUM: two approvals of four addresses in the first environment
GROUP = ENERGY.model_package_group
APPROVERS = {env: ENERGY.environments[env].approvers.emails for env in CHAIN}
# The last environment has its own approvers group (as the shipped config has): alice may not decide there.
GROUPS = {env: ENERGY.environments[env].approvers.group for env in CHAIN}
PEOPLE = (
    ("alice", "alice@example.com", ("modelgate-approvers",)),
    ("bob", "bob@example.com", ("modelgate-approvers",)),  # registers the models
    ("carol", "carol@example.com", ("data-scientists",)),  # not an approver
    ("dave", "dave@example.com", ("modelgate-approvers-prod", "modelgate-approvers")),
    ("erin", "erin@example.com", ("modelgate-approvers",)),
    ("frank", "frank@example.com", ("modelgate-approvers",)),
)
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


class World(LocalApprovalWorkflow):
    def register(self, registered_by: str | None = "bob@example.com", evaluation=EVALUATION, group=None) -> str:
        return super().register(registered_by, evaluation, group)


_LIVE: list[DeployedWorld] = []


@pytest.hookimpl(trylast=True)
class DeployedWorld:
    """The process's deployed world, deployed again only if an in-process moto reset it under us."""

    def __init__(self, assembly: Path, config, **options) -> None:
        self.assembly, self.config, self.options = assembly, config, options
        self.world: LocalWorld | None = None

    def get(self) -> LocalWorld:
        if self.world is not None and not self.world.intact():
            self.close()
        if self.world is None:
            # moto's backends are per process: one deployed world at a time (deploying resets them).
            for other in [holder for holder in _LIVE if holder is not self]:
                other.close()
            _LIVE.append(self)

            self.world = LocalWorld(self.assembly, self.config, hold=False, in_process=True, **self.options)
            self.world.__enter__()
        else:
            self.world.reset()
        return self.world

    def close(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        if self.world is not None:
            self.world.__exit__(None, None, None)
            self.world = None


def deployed_world(config_path: Path, config, **options):
    """A session fixture's body: the world of `config_path` (Storage and Approval of every environment)."""
    holder = DeployedWorld(cached_synth(config_path), config, stacks=("Storage", "Approval"), **options)
    try:
        yield holder
    finally:
        holder.close()


def as_operator(monkeypatch, world: LocalApprovalWorkflow) -> None:
    """The process environment of a person or CI/CD running the CLI as the account's operator, locally."""
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)  # the operator's keys are a user's: no session
    for name, value in world.session.environ().items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def approval_world(tmp_path_factory):
    yield from deployed_world(WORLD_CONFIG, CONFIG, people=PEOPLE, log_dir=tmp_path_factory.mktemp("lambda-logs"))


@pytest.fixture
def world(approval_world):
    """The deployed world as right after its deploy, IAM enforced, for one test."""
    deployed = approval_world.get()
    with deployed.use():
        yield World(deployed)
