"""The CDK Pipelines pipeline: order of environments, people in the loop, cross-account deployment."""

from __future__ import annotations

import pytest

from infra.config import load_config
from stacks import cicd_stack

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names


@pytest.fixture(scope="module")
def pipeline(synth, config):
    stack = synth.stack(f"{config.project.name}-cicd", f"{config.project.name}-cicd")
    (resource,) = [r for r in stack.template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    return resource["Properties"]


def environment_stages(pipeline, config) -> list[dict]:
    return [stage for stage in pipeline["Stages"] if stage["Name"].startswith(f"{config.project.name}-")]


def test_environments_deploy_in_promotion_order_after_synth_and_self_update(pipeline, config):
    names = [stage["Name"] for stage in pipeline["Stages"]]
    # "Assets" publishes the stages' file assets (Lambda code and layers) once, before the first deployment.
    assert names == ["Source", "Build", "UpdatePipeline", "Assets"] + [
        f"{config.project.name}-{env}" for env in ENVIRONMENTS
    ]


def test_a_person_approves_before_uat_and_prod_only(pipeline, config):
    approvals = {
        stage["Name"].rsplit("-", 1)[1]: [a for a in stage["Actions"] if a["ActionTypeId"]["Category"] == "Approval"]
        for stage in environment_stages(pipeline, config)
    }
    assert {env for env, actions in approvals.items() if actions} == {"uat", "prod"}
    for env in ("uat", "prod"):
        (approval,) = approvals[env]
        deploy_orders = [
            a["RunOrder"]
            for s in pipeline["Stages"]
            if s["Name"].endswith(env)
            for a in s["Actions"]
            if a["ActionTypeId"]["Category"] == "Deploy"
        ]
        assert approval["RunOrder"] < min(deploy_orders), f"approval must come before deploying {env}"


def test_each_environment_is_deployed_with_its_own_accounts_bootstrap_role(pipeline, config):
    for stage in environment_stages(pipeline, config):
        env = stage["Name"].rsplit("-", 1)[1]
        account = config.environments[env].account
        for action in stage["Actions"]:
            if action["ActionTypeId"]["Category"] == "Deploy":
                assert f"{account}" in str(action["RoleArn"]), (env, action["Name"])


def test_artifacts_are_encrypted_with_a_rotating_cross_account_key(synth, config):
    stack = synth.stack(f"{config.project.name}-cicd", f"{config.project.name}-cicd")
    keys = [r for r in stack.template["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    assert len(keys) == 1
    assert keys[0]["Properties"]["EnableKeyRotation"] is True
    (artifact_bucket,) = [
        r
        for r in stack.template["Resources"].values()
        if r["Type"] == "AWS::S3::Bucket" and "LoggingConfiguration" in r["Properties"]
    ]
    assert artifact_bucket["Properties"]["LoggingConfiguration"]["LogFilePrefix"] == "pipeline-artifacts/"


def test_source_is_the_configured_connection_and_synth_uses_the_makefile(synth, config, pipeline):
    source = pipeline["Stages"][0]["Actions"][0]["Configuration"]
    assert source["ConnectionArn"] == config.cicd.connection_arn
    assert source["FullRepositoryId"] == config.cicd.repository
    assert source["BranchName"] == config.cicd.branch
    stack = synth.stack(f"{config.project.name}-cicd", f"{config.project.name}-cicd")
    projects = [r for r in stack.template["Resources"].values() if r["Type"] == "AWS::CodeBuild::Project"]
    assert any("make synth" in str(p["Properties"]["Source"]["BuildSpec"]) for p in projects)


def test_codepipelines_fixed_quotas_are_checked_on_every_stage():
    fine = [("Source", 1), ("Build", 1), ("modelgate-dev.1", 50), ("modelgate-dev.2", 3)]
    assert cicd_stack.quota_problems(fine) == []
    many = [(f"stage-{i}", 1) for i in range(51)]
    assert cicd_stack.quota_problems(many) == ["51 stages (CodePipeline allows 2 to 50 in a pipeline)"]
    assert cicd_stack.quota_problems([("Source", 1)]) == ["1 stages (CodePipeline allows 2 to 50 in a pipeline)"]
    crowded = cicd_stack.quota_problems([("Source", 1), ("modelgate-prod", 51), ("Empty", 0)])
    assert crowded == [
        "stage 'modelgate-prod' has 51 actions (1 to 50 allowed)",
        "stage 'Empty' has 0 actions (1 to 50 allowed)",
    ]
    named = cicd_stack.quota_problems([("Source", 1), ("has space", 1), ("x" * 101, 1)])
    assert [p.split(" is not")[0] for p in named] == ["stage name 'has space'", f"stage name {'x' * 101!r}"]


def test_the_shipped_pipeline_is_within_the_quotas(pipeline):
    stages = [(stage["Name"], len(stage["Actions"])) for stage in pipeline["Stages"]]
    assert cicd_stack.quota_problems(stages) == []


def test_a_pipeline_past_the_stage_quota_is_refused_at_synth_saying_what_to_do(monkeypatch, tmp_path):
    from stacks.app_builder import build_app

    stages = len(ENVIRONMENTS) + 4  # Source, Build, UpdatePipeline, Assets and one per environment (one model)
    monkeypatch.setattr(cicd_stack, "MAX_STAGES", stages - 1)
    with pytest.raises(cicd_stack.PipelineQuotaError, match=rf"{stages} stages .* allows 2 to {stages - 1}") as error:
        build_app(outdir=str(tmp_path))
    assert "split the config's models over two config files" in str(error.value)
