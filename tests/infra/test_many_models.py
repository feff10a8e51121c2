"""Issue 13: many models on one platform, the promotion chain as data. config/examples/many-models.yaml (models
energy-forecast and churn (group churn-scores), chain sandbox -> staging -> prod, churn's prod quorum 2, prod
after a manual approval) synthesizes once per session (`many_synth`); these are its template assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from infra.config import ConfigError, load_config, parse_config
from infra.constructs.promotion_gate import gate_step_id
from modelgate.approval.settings import MODELS_FILE
from modelgate.parameters import pipeline_name
from stacks.stage import pipeline_stack_id
from tests.infra.conftest import MANY_MODELS

CONFIG = load_config(MANY_MODELS)
CHAIN = CONFIG.chain.names
GROUPS = {model.name: model.model_package_group for model in CONFIG.models}


def stage(config, env: str) -> str:
    return f"{config.project.name}-{env}"


def resources(stack, kind: str) -> dict:
    template = stack["template"] if isinstance(stack, dict) else stack.template
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def test_the_example_is_what_the_issue_asks_for():
    assert CHAIN == ("sandbox", "staging", "prod")
    assert GROUPS == {"energy-forecast": "energy-forecast", "churn": "churn-scores"}
    assert CONFIG.model("churn").environments["prod"].approvers.quorum == 2


def test_nag_clean_and_no_cdk_warnings(many_synth):
    assert many_synth.findings == [], "\n".join(map(str, many_synth.findings))
    assert many_synth.annotations == [], "\n".join(map(str, many_synth.annotations))
    assert many_synth.nag_reports, "nag ran"


def test_stages_follow_the_chain_then_the_pipeline(many_synth, many_config):
    assert many_synth.stage_names() == [*(stage(many_config, env) for env in CHAIN), "modelgate-cicd"]


@pytest.mark.parametrize("env", CHAIN)
def test_one_training_pipeline_per_model_in_every_environment_named_after_it(many_synth, many_config, env):
    names = {}
    for model in many_config.models:
        stack = many_synth.stack(stage(many_config, env), pipeline_stack_id(model))
        (pipeline,) = resources(stack, "AWS::SageMaker::Pipeline").values()
        names[model.name] = pipeline["Properties"]["PipelineName"]
        definition = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]
        text = json.dumps(definition)
        assert f"readings/{model.name}/" in text, "each model trains on its own readings"
        assert model.model_package_group in text, "and registers into its own group"
        for other in many_config.models:
            if other is not model:
                assert f"readings/{other.name}/" not in text
    assert names == {model.name: pipeline_name("modelgate", model.name, env) for model in many_config.models}


def test_the_first_environment_holds_one_registry_group_per_model_shared_with_the_later_accounts(
    many_synth, many_config
):
    first, *later = CHAIN
    groups = resources(many_synth.stack(stage(many_config, first), "Storage"), "AWS::SageMaker::ModelPackageGroup")
    assert sorted(g["Properties"]["ModelPackageGroupName"] for g in groups.values()) == sorted(GROUPS.values())
    accounts = {many_config.environments[env].account for env in later}
    for group in groups.values():
        assert group["DeletionPolicy"] == "Retain"
        (statement,) = group["Properties"]["ModelPackageGroupPolicy"]["Statement"]
        assert set(statement["Principal"]["AWS"]) == {f"arn:aws:iam::{a}:root" for a in accounts}
        name = group["Properties"]["ModelPackageGroupName"]
        assert any(f"model-package/{name}/*" in resource for resource in statement["Resource"])
    for env in later:
        for stack in many_synth.stacks:
            if stack.stage == stage(many_config, env):
                assert not resources(stack, "AWS::SageMaker::ModelPackageGroup"), (env, stack.name)


def test_termination_protection_is_every_environment_after_the_first(many_synth, many_config):
    protected = {env: many_synth.stack(stage(many_config, env), "Storage").termination_protection for env in CHAIN}
    assert protected == {"sandbox": False, "staging": True, "prod": True}


@pytest.fixture(scope="module")
def pipeline(many_synth, many_config):
    stack = many_synth.stack("modelgate-cicd", "modelgate-cicd")
    (resource,) = resources(stack, "AWS::CodePipeline::Pipeline").values()
    return stack, resource["Properties"]


def test_a_person_approves_only_before_environments_with_manual_approval(pipeline, many_config):
    _, properties = pipeline
    approvals = {
        s["Name"].removeprefix("modelgate-"): [a for a in s["Actions"] if a["ActionTypeId"]["Category"] == "Approval"]
        for s in properties["Stages"]
        if s["Name"].removeprefix("modelgate-") in CHAIN
    }
    assert (
        {env for env, found in approvals.items() if found}
        == {env for env, settings in many_config.environments.items() if settings.manual_approval}
        == {"prod"}
    )


def test_every_environment_after_the_first_gates_every_model_before_deploying(pipeline, many_config):
    stack, properties = pipeline
    projects = resources(stack, "AWS::CodeBuild::Project")
    for s in properties["Stages"]:
        env = s["Name"].removeprefix("modelgate-")
        if env not in CHAIN:
            continue
        gates = {a["Name"]: a for a in s["Actions"] if a["Name"].startswith("ModelGate-")}
        if env == CHAIN[0]:
            assert gates == {}, "versions arrive in the first environment: nothing to gate"
            continue
        assert set(gates) == {gate_step_id(env, model.name) for model in many_config.models}
        deploys = [a["RunOrder"] for a in s["Actions"] if a["ActionTypeId"]["Category"] == "Deploy"]
        for model in many_config.models:
            gate = gates[gate_step_id(env, model.name)]
            assert gate["RunOrder"] < min(deploys)
            spec = json.dumps(projects[gate["Configuration"]["ProjectName"]["Ref"]]["Properties"]["Source"])
            assert f"python -m modelgate approved {model.model_package_group} --env {env} " in spec


@pytest.mark.parametrize("env", CHAIN)
def test_one_approval_stack_serves_every_model_with_its_own_settings(many_synth, many_config, env):
    approval = many_synth.stack(stage(many_config, env), "Approval")
    functions = {f["Properties"]["Handler"]: f for f in resources(approval, "AWS::Lambda::Function").values()}
    variables = functions["lambdas.approval_api.handler"]["Properties"]["Environment"]["Variables"]
    assert variables["MODELGATE_CHAIN"] == ",".join(CHAIN)
    shipped = many_synth.package_file(functions["lambdas.approval_api.handler"], MODELS_FILE)
    models = {m["group"]: m for m in json.loads(shipped)}
    assert set(models) == set(GROUPS.values())
    for model in many_config.models:
        settings = model.environments[env].approvers
        assert models[model.model_package_group]["quorum"] == settings.quorum
        assert models[model.model_package_group]["emails"] == list(settings.emails)
    assert models["churn-scores"]["quorum"] == (2 if env == "prod" else 1)
    groups = {g["Properties"]["GroupName"] for g in resources(approval, "AWS::Cognito::UserPoolGroup").values()}
    assert groups == {model.environments[env].approvers.group for model in many_config.models}


@pytest.mark.parametrize("env", CHAIN)
def test_registry_events_of_every_group_arrive_in_the_first_environment_only(many_synth, many_config, env):
    approval = many_synth.stack(stage(many_config, env), "Approval")
    patterns = [r["Properties"]["EventPattern"] for r in resources(approval, "AWS::Events::Rule").values()]
    registry = [p for p in patterns if p.get("detail-type") == ["SageMaker Model Package State Change"]]
    promotions = [p for p in patterns if p.get("source") == ["modelgate.promotion"]]
    if env == CHAIN[0]:
        (pattern,) = registry
        assert sorted(pattern["detail"]["ModelPackageGroupName"]) == sorted(GROUPS.values())
        assert promotions == []
    else:
        assert registry == []
        (pattern,) = promotions
        registry = many_config.environments[CHAIN[0]]
        prefix = f"arn:aws:sagemaker:{registry.region}:{registry.account}:model-package/"
        assert pattern["detail"]["model_package_arn"] == [{"prefix": prefix}], "the registry's, one for every model"
        assert pattern["detail"]["target_environment"] == [env]


@pytest.mark.parametrize("env", CHAIN[1:])
def test_the_gate_role_reads_every_models_approved_parameter_of_its_environment_only(many_synth, many_config, env):
    approval = many_synth.stack(stage(many_config, env), "Approval")
    (role,) = [k for k, r in resources(approval, "AWS::IAM::Role").items() if r["Properties"].get("RoleName")]
    statements = [
        s
        for policy in resources(approval, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    (statement,) = statements
    assert statement["Action"] == "ssm:GetParameter"
    target = many_config.environments[env]
    assert sorted(statement["Resource"]) == sorted(
        f"arn:aws:ssm:{target.region}:{target.account}:parameter/modelgate/{group}/{env}" for group in GROUPS.values()
    )


def _approval_stack(models: list[dict], env_name: str = "prod"):
    """The Approval stack of `env_name` for the example with `models` instead of its own (constructed, not
    synthesized: the checks run at construction)."""
    from aws_cdk import App
    from aws_cdk import Environment as CdkEnvironment

    from stacks.app_builder import feature_flags
    from stacks.approval_stack import ApprovalStack
    from stacks.storage_stack import StorageStack
    from stacks.topology import Topology

    raw = yaml.safe_load(Path(MANY_MODELS).read_text())
    raw["models"] = models
    config = parse_config(raw, "many.yaml")
    env = config.environments[env_name]
    app = App(context=feature_flags())
    where = CdkEnvironment(account=env.account, region=env.region)
    storage = StorageStack(app, "Storage", env=where)
    return ApprovalStack(
        app,
        "Approval",
        project=config.project,
        environment=env,
        models=config.models,
        storage=storage,
        topology=Topology.from_config(config, env_name),
        env=where,
    )


def _models(count: int, group: str = "customer-model", approvers: int = 3) -> list[dict]:
    return [
        {
            "name": f"customer-model-{index:02d}",
            "model_package_group": f"{group}-{index:02d}",
            "approvers": {"emails": [f"approver-{n}-of-model-{index}@example.com" for n in range(approvers)]},
        }
        for index in range(count)
    ]


def test_sixty_models_with_long_approver_lists_fit_the_approval_functions():
    """Was the 4 KB ceiling: 12 models with three approvers each overflowed Lambda's environment limit, because the
    approval functions got the models' list in MODELGATE_MODELS. The list ships in their code package now
    (ApprovalSettings.bundled_files), so the environment no longer grows with the models: 60 models construct, and
    the next limit on the list is Lambda's 250 MB deployment package (a model takes ~200 bytes). (Deployed and
    loaded in the local world: tests/integration/approval/test_sixty_models.py.)"""
    from aws_cdk.assertions import Template

    from modelgate.approval.settings import MODELS_FILE

    def functions(count: int) -> tuple[Path, dict]:
        stack = _approval_stack(_models(count))
        template = Template.from_stack(stack).to_json()
        return Path(stack.node.root.outdir), resources({"template": template}, "AWS::Lambda::Function")

    (outdir, sixty), (_, two) = functions(60), functions(2)
    assert sixty.keys() == two.keys()
    for logical, function in sixty.items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables == two[logical]["Properties"]["Environment"]["Variables"], "as with 2 models"
        assert not [name for name in variables if "MODELS" in name]
        if function["Properties"]["Handler"] in ("lambdas.approval_api.handler", "lambdas.request_approval.handler"):
            package = outdir / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"
            models = json.loads((package / MODELS_FILE).read_text())
            assert [m["group"] for m in models] == [f"customer-model-{i:02d}" for i in range(60)]
            assert models[59]["emails"] == [f"approver-{n}-of-model-59@example.com" for n in range(3)]


def test_a_registry_rule_over_eventbridges_pattern_limit_is_a_config_error_naming_the_remedy():
    """The first environment's rule names every model group in its event pattern (registry events of other groups
    of the account must not reach the function); EventBridge refuses a pattern over 2,048 characters at deploy,
    so synth says so first: about 95 models with 20-character group names."""
    with pytest.raises(ConfigError) as refused:
        _approval_stack(_models(80, group="a-model-package-group-with-a-rather-long-name", approvers=1), "sandbox")
    message = str(refused.value)
    assert "the registry rule names every model group (80) in its event pattern" in message
    assert "over EventBridge's 2048" in message
    assert "two projects" in message
    _approval_stack(_models(60, approvers=1), "sandbox")  # 60 models with 17-character groups fit


def test_the_approval_api_may_make_a_quorums_condition_check_on_the_state_table(many_synth, many_config):
    """An approval short of its quorum commits a transaction with a ConditionCheck item, which IAM authorizes as
    dynamodb:ConditionCheckItem on the table (DynamoDB developer guide, "Using IAM with transactions")."""
    approval = many_synth.stack(stage(many_config, CHAIN[-1]), "Approval")
    functions = resources(approval, "AWS::Lambda::Function")
    [(_, api)] = [(k, f) for k, f in functions.items() if f["Properties"]["Handler"] == "lambdas.approval_api.handler"]
    role = api["Properties"]["Role"]["Fn::GetAtt"][0]
    actions = set()
    for policy in resources(approval, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                listed = statement["Action"]
                actions.update([listed] if isinstance(listed, str) else listed)
    assert "dynamodb:ConditionCheckItem" in actions
