"""A platform of 60 models (was: at most about 12, the approval functions' models' list in Lambda's 4 KB
environment). Storage + Approval of a one-environment platform of 60 models, three approvers each, synthesized,
deployed in the local world, and its request-approval function (the real handler, in its own process, with its
own role) mails the 60th model's approvers: the list it loads from its code package holds every model.

The serving stacks are left out: none of them grows with the models (one `Serving-<model>` stack per model, one
API stack; tests/infra/test_serving.py synthesizes 20 models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from aws_cdk import App, Stage
from aws_cdk import Environment as CdkEnvironment

from infra.build.synth_report import synthesize_app
from infra.config import parse_config
from infra.constructs.approval_requests import EVENT_PATTERN_LIMIT, RULE_DESCRIPTION_LIMIT
from modelgate.approval.settings import MODELS_FILE, ApprovalSettings, model_approvals
from sandbox.approval_workflow import LocalApprovalWorkflow
from sandbox.world import LocalWorld
from stacks.app_builder import feature_flags, stage_id
from stacks.approval_stack import ApprovalStack
from stacks.storage_stack import StorageStack
from stacks.topology import Topology
from tests.integration.approval.conftest import EVALUATION

EXAMPLE = Path("config/examples/many-models.yaml")
MODELS = 60
pytestmark = pytest.mark.xdist_group("sixty-models")


def sixty_models_config():
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw.pop("cicd", None)
    raw["environments"] = raw["environments"][:1]
    raw["models"] = [
        {
            "name": f"customer-model-{index:02d}",
            "model_package_group": f"customer-model-{index:02d}",
            "approvers": {"emails": [f"approver-{n}-of-model-{index:02d}@example.com" for n in range(3)]},
        }
        for index in range(MODELS)
    ]
    return parse_config(raw, "sixty-models.yaml")


CONFIG = sixty_models_config()
ENV = CONFIG.chain.first
GROUPS = [model.model_package_group for model in CONFIG.models]


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    out = tmp_path_factory.mktemp("sixty-models")
    env = CONFIG.environments[ENV]
    app = App(context=feature_flags(), outdir=str(out))
    stage = Stage(app, stage_id(CONFIG.project.name, ENV), env=CdkEnvironment(account=env.account, region=env.region))
    storage = StorageStack(stage, "Storage", model_package_groups=GROUPS)
    ApprovalStack(
        stage,
        "Approval",
        project=CONFIG.project,
        environment=env,
        models=CONFIG.models,
        storage=storage,
        topology=Topology.from_config(CONFIG, ENV),
    )
    return synthesize_app(app, out)


def test_the_models_ship_in_the_code_package_and_every_rule_fits_eventbridge(synthesized):
    approval = synthesized.stack(stage_id(CONFIG.project.name, ENV), "Approval")
    resources = approval.template["Resources"]
    functions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    for function in functions:
        assert not [name for name in function["Properties"]["Environment"]["Variables"] if "MODELS" in name]
    (request,) = [f for f in functions if f["Properties"]["Handler"] == "lambdas.request_approval.handler"]
    shipped = json.loads(synthesized.package_file(request, MODELS_FILE))
    assert [model["group"] for model in shipped] == GROUPS
    # What AWS refuses at deploy and moto does not check: a rule's pattern and description sizes.
    for rule in (r for r in resources.values() if r["Type"] == "AWS::Events::Rule"):
        assert len(json.dumps(rule["Properties"]["EventPattern"], separators=(",", ":"))) <= EVENT_PATTERN_LIMIT
        assert len(rule["Properties"]["Description"]) <= RULE_DESCRIPTION_LIMIT


def test_deployed_the_approval_functions_load_all_sixty_models_and_mail_the_last_ones_approvers(synthesized):
    with LocalWorld(synthesized.outdir, CONFIG, stacks=("Storage", "Approval")) as world:
        approval = world.envs[ENV].stacks["Approval"]
        for logical in ("RequestApproval", "ApprovalApi"):
            settings = ApprovalSettings.from_environ(world.environment_of(ENV, "Approval", approval.function(logical)))
            assert settings.models == model_approvals(CONFIG.models, ENV)
        workflow = LocalApprovalWorkflow(world)
        last = CONFIG.models[-1]
        arn = workflow.register("bob@example.com", EVALUATION, last.model_package_group)
        spec = approval.function("RequestApproval")
        outcome = world.functions[world.envs[ENV].account.account].invoke(
            approval.name, spec.logical_id, workflow.registry_event(arn)
        )
        expected = list(last.environments[ENV].approvers.emails)
        assert sorted(outcome["sent"]) == sorted(expected), outcome
        mails = [m for m in workflow.emails() if f" {last.name} v1" in m.subject]
        assert sorted(r for mail in mails for r in mail.recipients) == sorted(expected)
