"""API Gateway's account-level CloudWatch role: exactly one owner per account and region, in a retained stack.

Two stacks that both set AWS::ApiGateway::Account overwrite each other's role, and deleting either one breaks
the logging of the other's APIs; REST API stages with logging fail to deploy while the setting is missing.
"""

from __future__ import annotations

from collections import Counter

import pytest
import yaml
from aws_cdk.assertions import Match, Template

from infra.config import load_config

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names

ACCOUNT = "AWS::ApiGateway::Account"
API_STACKS = ("Approval", "Serving")


def test_exactly_one_api_gateway_account_setting_per_account_and_region(synth):
    owners = Counter()
    for stack in synth.stacks:
        owners[(stack.account, stack.region)] += stack.resources[ACCOUNT]
        if stack.resources[ACCOUNT]:
            assert stack.name == "Storage", f"{stack.stage}/{stack.name}: only the stateful stack owns it"
    with_apis = {(s.account, s.region) for s in synth.stacks if s.resources["AWS::ApiGateway::RestApi"]}
    assert {place: owners[place] for place in with_apis} == dict.fromkeys(with_apis, 1)
    assert set(owners.values()) <= {0, 1}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_storage_stack_owns_a_retained_role_only_api_gateway_assumes(template, env):
    storage = template(env, "Storage")
    (account,) = storage.find_resources(ACCOUNT).values()
    assert account["DeletionPolicy"] == "Retain", "logging of the APIs outlives the stack"
    role = storage.find_resources("AWS::IAM::Role")[account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]]
    assert role["DeletionPolicy"] == "Retain"
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
    ((_, _, policy),) = [arn["Fn::Join"][1] for arn in role["Properties"]["ManagedPolicyArns"]]
    assert policy == ":iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
    assert "Policies" not in role["Properties"], "nothing beyond AWS's documented logging policy"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rest_api_stacks_leave_the_account_setting_alone_and_deploy_after_storage(synth, template, config, env):
    for name in API_STACKS:
        stack = template(env, name)
        stack.resource_count_is("AWS::ApiGateway::RestApi", 1)
        stack.resource_count_is(ACCOUNT, 0)
        roles = stack.find_resources(
            "AWS::IAM::Role",
            {
                "Properties": {
                    "AssumeRolePolicyDocument": {"Statement": [{"Principal": {"Service": "apigateway.amazonaws.com"}}]}
                }
            },
        )
        assert roles == {}, f"{env}/{name}: no CloudWatch role of its own"
        stage = synth.stack(f"{config.project.name}-{env}", name)
        assert "Storage" in stage.depends_on, f"{env}/{name} must deploy after the account's CloudWatch role"


@pytest.fixture(scope="module")
def sharing_account(tmp_path_factory, config):
    """A variant: test lives in dev's account and region; only test's stage is synthesized."""
    from infra.build.synth_report import synthesize
    from infra.config import DEFAULT_CONFIG_PATH

    dev = config.environments["dev"]
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    (test,) = [environment for environment in raw["environments"] if environment["name"] == "test"]
    test.update(account=dev.account, region=dev.region)
    folder = tmp_path_factory.mktemp("shared-account")
    (folder / "modelgate.yaml").write_text(yaml.safe_dump(raw))
    return synthesize(folder / "cdk.out", context={"config": str(folder / "modelgate.yaml"), "env": "test"})


def test_an_environment_in_an_earlier_environments_account_leaves_the_setting_to_it(sharing_account, config):
    stage = f"{config.project.name}-test"
    assert sharing_account.findings == [], "nag stays clean"
    assert sharing_account.annotations == []
    for name in ("Storage", *API_STACKS):
        Template.from_json(sharing_account.stack(stage, name).template).resource_count_is(ACCOUNT, 0)
    # The APIs are still logged: dev's Storage stack (deployed first by the promotion order) sets the role.
    Template.from_json(sharing_account.stack(stage, "Serving").template).has_resource_properties(
        "AWS::ApiGateway::Stage", {"MethodSettings": Match.array_with([Match.object_like({"LoggingLevel": "ERROR"})])}
    )
