"""Issue 12: what would have stopped the first real `cdk deploy` or pipeline run, asserted on the templates.

Each test names the problem of the issue it covers and what AWS would have done without it.
"""

from __future__ import annotations

import itertools
import json

import botocore.session
import pytest
from aws_cdk import App, Stack
from aws_cdk import Environment as CdkEnvironment
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from infra.config import load_config
from infra.constructs.model_artifacts import REGISTERED_MODEL_KEYS
from infra.constructs.triton_endpoint import TritonMultiModelEndpoint
from infra.gpu_hosts import AMIS_BY_NAME, minimum_driver
from modelgate.serving import settings as names
from stacks.serving_stack import model_serving_stack_id

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names
(MODEL,) = load_config().models  # the shipped config's one model
MODEL_SERVING = model_serving_stack_id(MODEL)  # its endpoint and deploy step


def only(resources: dict) -> dict:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.values()))


def policy_statements(template: Template, role_logical: str) -> list[dict]:
    return [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role_logical} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def function_by_handler(template: Template, handler: str) -> tuple[str, dict]:
    (found,) = [
        (k, v)
        for k, v in template.find_resources("AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == handler
    ]
    return found


# -- 1. Triton needs a host driver SageMaker's default GPU host (470, CUDA 11.4) does not have -----------------
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_problem1_the_variant_names_an_inference_ami_with_the_driver_triton_needs(template, config, env):
    serving = config.environments[env].serving
    props = only(template(env, MODEL_SERVING).find_resources("AWS::SageMaker::EndpointConfig"))["Properties"]
    (variant,) = props["ProductionVariants"]
    ami = variant["InferenceAmiVersion"]
    model = botocore.session.get_session().get_service_model("sagemaker")
    assert ami in model.shape_for("ProductionVariantInferenceAmiVersion").enum, "a value CreateEndpointConfig accepts"
    assert AMIS_BY_NAME[ami].driver >= minimum_driver(serving.triton_version) > 470
    assert ami == serving.host_ami


# -- 4. CodeConnections ARNs only match codeconnections: actions ----------------------------------------------
def test_problem4_the_source_stage_may_use_the_connection_with_the_arns_own_prefix(synth, config):
    template = Template.from_json(synth.stack(f"{config.project.name}-cicd", f"{config.project.name}-cicd").template)
    arn = config.cicd.connection_arn
    service = arn.split(":")[2]
    uses = [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if arn in as_list(statement["Resource"])
    ]
    assert uses, "some role must be allowed to use the connection"
    for statement in uses:
        assert {action.split(":")[0] for action in as_list(statement["Action"])} == {service}, statement
    assert any(f"{service}:UseConnection" in as_list(s["Action"]) for s in uses)


# -- 6. no reserved concurrency (fresh accounts' quota); deploys serialised by a lease --------------------------
def test_problem6_no_function_reserves_concurrency(synth):
    reserved = [
        (stack.stage, stack.name, logical)
        for stack in synth.stacks
        for logical, resource in stack.template.get("Resources", {}).items()
        if resource["Type"] == "AWS::Lambda::Function" and "ReservedConcurrentExecutions" in resource["Properties"]
    ]
    assert reserved == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_problem6_the_deploy_step_holds_a_lease_as_long_as_its_timeout(template, env):
    serving = template(env, MODEL_SERVING)
    _, function = function_by_handler(serving, "lambdas.serving_deploy.handler")
    variables = function["Properties"]["Environment"]["Variables"]
    (table,) = serving.find_resources("AWS::DynamoDB::Table")
    assert variables[names.DEPLOY_LOCK_TABLE] == {"Ref": table}
    assert variables[names.DEPLOY_LEASE_SECONDS] == str(function["Properties"]["Timeout"])
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    grants = [s for s in policy_statements(serving, role) if {"Fn::GetAtt": [table, "Arn"]} in as_list(s["Resource"])]
    assert {action for s in grants for action in as_list(s["Action"])} == {"dynamodb:PutItem", "dynamodb:DeleteItem"}


# -- 7. updates keep capacity; an instance-type change is a new endpoint, not UpdateEndpoint --------------------
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_problem7_an_update_keeps_the_autoscaled_count_but_takes_new_data_capture(template, env):
    props = only(template(env, MODEL_SERVING).find_resources("AWS::SageMaker::Endpoint"))["Properties"]
    assert props["RetainAllVariantProperties"] is True
    assert props["ExcludeRetainedVariantProperties"] == [{"VariantPropertyType": "DataCaptureConfig"}]


def _endpoint_template(serving) -> Template:
    app = App()
    stack = Stack(app, "Probe", env=CdkEnvironment(account="222222222222", region="eu-west-1"))
    key = kms.Key(stack, "Key")
    bucket = s3.Bucket(stack, "Bucket")
    TritonMultiModelEndpoint(
        stack,
        "Triton",
        serving=serving,
        model_repository=bucket,
        prefix="models/energy-forecast/",
        capture_prefix="data-capture/energy-forecast/",
        label="energy-forecast",
        key=key,
        capture_bucket=bucket,
    )
    return Template.from_stack(stack)


def test_problem7_a_new_instance_type_is_a_new_endpoint_and_scalable_target_other_changes_update(config):
    serving = config.environments["prod"].serving
    before = _endpoint_template(serving)
    bigger = _endpoint_template(serving.model_copy(update={"instance_type": "ml.g5.4xlarge"}))
    rescaled = _endpoint_template(serving.model_copy(update={"min_instances": 3, "max_instances": 8}))

    def endpoint_and_target(template: Template) -> tuple[str, dict]:
        (endpoint,) = template.find_resources("AWS::SageMaker::Endpoint")
        target = only(template.find_resources("AWS::ApplicationAutoScaling::ScalableTarget"))
        return endpoint, target

    def name(template: Template, endpoint: str) -> str:
        return template.to_json()["Resources"][endpoint]["Properties"]["EndpointName"]

    (old, _), (new, new_target) = endpoint_and_target(before), endpoint_and_target(bigger)
    # A new logical id and a new name (endpoints are named at synth, by construct path): CloudFormation creates
    # the new endpoint, then deletes the old one (and its scaling).
    assert old != new
    assert name(before, old) != name(bigger, new)
    assert new_target["Properties"]["ResourceId"] == f"endpoint/{name(bigger, new)}/variant/AllTraffic"
    assert new in new_target["DependsOn"], "the target registers an endpoint that exists"
    # Capacity and target changes keep the endpoint: UpdateEndpoint with the retained instance count.
    assert endpoint_and_target(rescaled)[0] == old


# -- 8. a version registered from any environment is servable wherever it is approved ---------------------------
def _cross_account_pairs(config):
    envs = config.environments
    return [(t, s) for t, s in itertools.permutations(ENVIRONMENTS, 2) if envs[t].account != envs[s].account]


def test_problem8_every_environments_registered_models_are_readable_by_every_other_account(template, config):
    pairs = _cross_account_pairs(config)
    assert pairs, "the shipped config uses one account per environment"
    for trainer, server in pairs:
        storage = template(trainer, "Storage")
        principal = f"arn:aws:iam::{config.environments[server].account}:root"
        bucket = [
            statement
            for policy in storage.find_resources("AWS::S3::BucketPolicy").values()
            if "Artifacts" in json.dumps(policy["Properties"]["Bucket"])
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if principal in as_list(statement.get("Principal", {}).get("AWS", []))
        ]
        assert [s["Action"] for s in bucket] == ["s3:GetObject"], (trainer, server)
        keys = [r["Fn::Join"][1][1] for r in bucket[0]["Resource"]]
        assert keys == [f"/{k}" for k in REGISTERED_MODEL_KEYS], "only registered versions, not data or checkpoints"
        key_policy = only({k: v for k, v in storage.find_resources("AWS::KMS::Key").items() if k.startswith("DataKey")})
        decrypt = [
            s
            for s in key_policy["Properties"]["KeyPolicy"]["Statement"]
            if principal in as_list(s.get("Principal", {}).get("AWS", []))
        ]
        assert [s["Action"] for s in decrypt] == ["kms:Decrypt"], (trainer, server)
        assert decrypt[0]["Condition"]["StringEquals"]["kms:ViaService"].startswith("s3.")


@pytest.mark.parametrize(
    ("stack", "handler"),
    [
        (MODEL_SERVING, "lambdas.serving_deploy.handler"),
        ("Approval", "lambdas.request_approval.handler"),
        ("Approval", "lambdas.approval_api.handler"),
    ],
)
def test_problem8_readers_of_a_version_may_read_it_in_every_other_account(template, config, stack, handler):
    for trainer, server in _cross_account_pairs(config):
        built = template(server, stack)
        _, function = function_by_handler(built, handler)
        statements = policy_statements(built, function["Properties"]["Role"]["Fn::GetAtt"][0])
        account = config.environments[trainer].account
        reads = [
            s
            for s in statements
            if as_list(s["Action"]) == ["s3:GetObject"]
            and account in as_list(s.get("Condition", {}).get("StringEquals", {}).get("s3:ResourceAccount", []))
        ]
        assert len(reads) == 1, (trainer, server, handler)
        assert reads[0]["Resource"] == [f"arn:aws:s3:::*/{k}" for k in REGISTERED_MODEL_KEYS]
        decrypts = [s for s in statements if as_list(s["Action"]) == ["kms:Decrypt"]]
        assert any(f"arn:aws:kms:*:{account}:key/*" in as_list(s["Resource"]) for s in decrypts), (trainer, server)


# -- 10. hardening ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_problem10_the_triton_model_runs_network_isolated(template, env):
    props = only(template(env, MODEL_SERVING).find_resources("AWS::SageMaker::Model"))["Properties"]
    assert props["EnableNetworkIsolation"] is True


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_problem10_the_approval_waf_blocks_known_bad_inputs(template, env):
    acl = only(template(env, "Approval").find_resources("AWS::WAFv2::WebACL"))["Properties"]
    groups = {
        rule["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for rule in acl["Rules"]
        if "ManagedRuleGroupStatement" in rule["Statement"]
    }
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= groups
