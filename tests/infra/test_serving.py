"""The serving stacks of every environment of config/examples/many-models.yaml (sandbox -> staging -> prod, models
energy-forecast and churn), with churn serving differently in prod: per model a `Serving-<model>` stack with its
endpoint and deploy step (that model's settings, nothing of one model reachable by another's), and one `Serving`
stack with the inference API routing by group.

Synthesized here (Storage + the serving stacks per environment, cdk-nag on), once per session, so these
assertions depend on no other stack."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from aws_cdk import App, Stack, Stage
from aws_cdk import Environment as CdkEnvironment
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from infra.build.nag import apply_nag
from infra.build.synth_report import synthesize_app
from infra.config import parse_config
from infra.constructs.inference_api import InferenceApi
from infra.instance_types import gpu_count, has_instance_store
from infra.triton_images import image_uri
from modelgate.parameters import parameter_name
from modelgate.serving import settings as names
from modelgate.serving.access import GROUP_HEALTH_ROUTE, HEALTH_ROUTE, INVOKE_ROUTE
from stacks.app_builder import feature_flags
from stacks.serving_stack import ModelServingStack, ServingStack, model_construct_id, model_serving_stack_id
from stacks.storage_stack import StorageStack
from stacks.topology import Topology
from tests.conftest import once_per_run

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "many-models.yaml"
# churn serves on other hardware, with data capture, in the last environment: each endpoint must follow its model.
CHURN_LAST = {
    "serving": {"instance_type": "ml.g4dn.xlarge", "min_instances": 2, "max_instances": 5, "data_capture": True}
}


def example_config():
    """config/examples/many-models.yaml, with churn's own serving settings in the last environment."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    last = raw["environments"][-1]["name"]
    churn = next(model for model in raw["models"] if model["name"] == "churn")
    churn.setdefault("environments", {}).setdefault(last, {}).update(CHURN_LAST)
    return parse_config(raw, str(EXAMPLE))


def synthesize_example(example, outdir: Path, environments: tuple[str, ...] | None = None, nag: bool = True):
    """Storage + the serving stacks of each (selected) environment of `example`, wired as stacks/stage.py wires
    them, cdk-nag on; `assembly-modelgate-<env>`."""
    app = App(context=feature_flags(), outdir=str(outdir))
    for env in example.environments.values():
        if environments is not None and env.name not in environments:
            continue
        stage = Stage(
            app, f"{example.project.name}-{env.name}", env=CdkEnvironment(account=env.account, region=env.region)
        )
        storage = StorageStack(stage, "Storage")
        others = tuple(sorted({e.account for e in example.environments.values() if e.name != env.name}))
        topology = Topology(example.chain, env.account, env.region, other_accounts=others)
        models = [
            ModelServingStack(
                stage,
                model_serving_stack_id(model),
                project=example.project,
                environment=env,
                model=model,
                storage=storage,
                topology=topology,
            )
            for model in example.models
        ]
        api = ServingStack(
            stage, "Serving", environment=env, served=[m.served for m in models], storage=storage, topology=topology
        )
        for model in models:
            api.add_stack_dependency(model)
        if nag:
            apply_nag(stage)
    return synthesize_app(app, outdir)  # raises NagViolations on any unsuppressed nag error


@pytest.fixture(scope="session")
def example():
    return example_config()


@pytest.fixture(scope="session")
def synthesized(example, tmp_path_factory):
    return once_per_run(tmp_path_factory, "serving.out", lambda out: synthesize_example(example, out))


@pytest.fixture(scope="session")
def serving(synthesized, example):
    cache: dict[str, Template] = {}

    def get(env: str) -> Template:
        if env not in cache:
            stack = synthesized.stack(f"{example.project.name}-{env}", "Serving")
            cache[env] = Template.from_json(stack.template)
        return cache[env]

    return get


@pytest.fixture(scope="session")
def model_serving(synthesized, example):
    """model_serving(env, model) -> Template of the model's `Serving-<model>` stack."""
    cache: dict[tuple[str, str], Template] = {}

    def get(env: str, model: str) -> Template:
        if (env, model) not in cache:
            stack = synthesized.stack(f"{example.project.name}-{env}", model_serving_stack_id(example.model(model)))
            cache[(env, model)] = Template.from_json(stack.template)
        return cache[(env, model)]

    return get


CHAIN = ("sandbox", "staging", "prod")  # the example's chain (asserted below, not assumed)
MODELS = ("energy-forecast", "churn")


def test_the_example_is_what_these_tests_cover(example):
    assert tuple(example.environments) == CHAIN
    assert tuple(model.name for model in example.models) == MODELS


def only(resources: dict) -> dict:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.values()))


def logical(resources: dict) -> str:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources))


def of_model(resources: dict, model: str) -> dict:
    """The resources of one model's `ModelServing` construct (logical ids start with its construct id)."""
    return {k: v for k, v in resources.items() if k.startswith(model_construct_id(model))}


def function_with_handler(template, handler: str, model: str | None = None) -> tuple[str, dict]:
    found = {
        k: v
        for k, v in template.find_resources("AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == handler
    }
    return logical(of_model(found, model) if model else found), only(of_model(found, model) if model else found)


def statements(template, role_logical: str) -> list[dict]:
    return [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role_logical} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def role_of(function: dict) -> str:
    return function["Properties"]["Role"]["Fn::GetAtt"][0]


def s3_keys(statement: dict) -> list[str]:
    """The object-key parts of a statement's S3 resources (`<bucket arn>/<key pattern>`)."""
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    return [r["Fn::Join"][1][-1] for r in resources if isinstance(r, dict) and "Fn::Join" in r]


def endpoint_of(template, model: str) -> str:
    return logical(of_model(template.find_resources("AWS::SageMaker::Endpoint"), model))


def test_nag_is_clean_and_every_environment_has_the_serving_stacks(synthesized, example):
    assert synthesized.findings == [], [str(f) for f in synthesized.findings]
    for env in CHAIN:
        names_here = {s.name for s in synthesized.stacks if s.stage == f"modelgate-{env}"}
        assert names_here == {"Storage", "Serving", *(f"Serving-{model}" for model in MODELS)}, env


@pytest.mark.parametrize("env", CHAIN)
def test_each_model_has_its_own_multimodel_triton_endpoint_reading_only_its_own_prefix(model_serving, example, env):
    for model in example.models:
        template = model_serving(env, model.name)
        assert len(template.find_resources("AWS::SageMaker::Endpoint")) == 1, "its own endpoint, no other"
        settings = model.environments[env]
        container = only(of_model(template.find_resources("AWS::SageMaker::Model"), model.name))["Properties"]
        container = container["PrimaryContainer"]
        assert container["Mode"] == "MultiModel"
        assert container["Image"] == image_uri(settings.region, settings.serving.triton_version)
        url = container["ModelDataUrl"]["Fn::Join"][1]
        assert (url[0], url[2]) == ("s3://", f"/models/{model.model_package_group}/"), "its group's prefix"
        # Its execution role reads archives under its own prefix, no other group's.
        role = logical(of_model(template.find_resources("AWS::IAM::Role"), f"{model.name}-Triton-Execution"))
        keys = [k for s in statements(template, role) for k in s3_keys(s)]
        capture = {f"/data-capture/{model.model_package_group}/*"} if settings.serving.data_capture else set()
        assert keys, "it reads its archives"
        assert set(keys) == {f"/models/{model.model_package_group}/*"} | capture, keys


@pytest.mark.parametrize("env", CHAIN)
def test_each_endpoint_runs_its_models_instance_type_capacity_autoscaling_and_data_capture(model_serving, example, env):
    for model in example.models:
        template = model_serving(env, model.name)
        settings = model.environments[env].serving
        props = only(of_model(template.find_resources("AWS::SageMaker::EndpointConfig"), model.name))["Properties"]
        (variant,) = props["ProductionVariants"]
        assert (variant["InstanceType"], variant["InitialInstanceCount"]) == (
            settings.instance_type,
            settings.min_instances,
        )
        assert variant["InferenceAmiVersion"] == settings.host_ami
        assert ("KmsKeyId" in props) is not has_instance_store(settings.instance_type)
        assert ("DataCaptureConfig" in props) is settings.data_capture
        target = only(of_model(template.find_resources("AWS::ApplicationAutoScaling::ScalableTarget"), model.name))
        target = target["Properties"]
        assert (target["MinCapacity"], target["MaxCapacity"]) == (settings.min_instances, settings.max_instances)
        name = template.to_json()["Resources"][endpoint_of(template, model.name)]["Properties"]["EndpointName"]
        assert target["ResourceId"] == f"endpoint/{name}/variant/AllTraffic", "it scales its own endpoint"
        policies = of_model(template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy"), model.name)
        targets = sorted(
            p["Properties"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in policies.values()
        )
        assert targets == sorted(
            [
                settings.target_invocations_per_instance,
                settings.target_gpu_utilization * gpu_count(settings.instance_type),
            ]
        )
        # Models and configs are replaced on every change: CloudFormation names them. The endpoint is named at
        # synth (the invoke function's package names it), by its construct path: a new instance type, a new name.
        for kind, name in (
            ("AWS::SageMaker::Model", "ModelName"),
            ("AWS::SageMaker::EndpointConfig", "EndpointConfigName"),
        ):
            assert name not in only(of_model(template.find_resources(kind), model.name))["Properties"], kind


def test_a_models_own_serving_settings_reach_only_its_endpoint(model_serving, example):
    """The override of churn in prod changes churn's prod endpoint and nothing else."""
    last = CHAIN[-1]
    churn = example.model("churn").environments[last].serving
    assert churn.instance_type == CHURN_LAST["serving"]["instance_type"]
    assert churn.data_capture

    def configs(env: str, model: str) -> dict:
        return only(of_model(model_serving(env, model).find_resources("AWS::SageMaker::EndpointConfig"), model))

    churn_variant = configs(last, "churn")["Properties"]["ProductionVariants"][0]
    energy_variant = configs(last, "energy-forecast")["Properties"]["ProductionVariants"][0]
    assert churn_variant["InstanceType"] == "ml.g4dn.xlarge"
    assert energy_variant["InstanceType"] == example.environments[last].serving.instance_type != "ml.g4dn.xlarge"
    assert "DataCaptureConfig" not in configs(last, "energy-forecast")["Properties"]
    capture = configs(last, "churn")["Properties"]["DataCaptureConfig"]
    assert capture["DestinationS3Uri"]["Fn::Join"][1][-1] == "/data-capture/churn-scores/", "its own captures"
    churn_earlier = configs(CHAIN[0], "churn")
    assert churn_earlier["Properties"]["ProductionVariants"][0]["InstanceType"] != "ml.g4dn.xlarge"


@pytest.mark.parametrize("env", CHAIN)
def test_each_model_has_its_own_deploy_step_parameter_lease_and_grants(model_serving, example, env):
    for model in example.models:
        template = model_serving(env, model.name)
        queue = logical(template.find_resources("AWS::SQS::Queue"))
        group = model.model_package_group
        name, function = function_with_handler(template, "lambdas.serving_deploy.handler", model.name)
        variables = function["Properties"]["Environment"]["Variables"]
        parameter = parameter_name(example.project.name, group, env)
        assert parameter == f"/modelgate/{group}/{env}"
        assert (variables[names.PARAMETER], variables[names.GROUP], variables[names.ENVIRONMENT]) == (
            parameter,
            group,
            env,
        )
        assert variables[names.DEPLOY_LOCK_TABLE] == {
            "Ref": logical(of_model(template.find_resources("AWS::DynamoDB::Table"), model.name))
        }
        rules = list(of_model(template.find_resources("AWS::Events::Rule"), model.name).values())
        patterns = [r["Properties"]["EventPattern"] for r in rules if "EventPattern" in r["Properties"]]
        assert patterns == [
            {"source": ["aws.ssm"], "detail-type": ["Parameter Store Change"], "detail": {"name": [parameter]}}
        ], "only its own group's approval starts it"
        assert [r["Properties"]["ScheduleExpression"] for r in rules if "ScheduleExpression" in r["Properties"]] == [
            "rate(1 day)"
        ]
        for rule in rules:
            (target,) = rule["Properties"]["Targets"]
            assert target["Arn"] == {"Fn::GetAtt": [name, "Arn"]}
            assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}
        own = statements(template, role_of(function))
        ssm = [s for s in own if s["Action"] == "ssm:GetParameter"]
        settings = model.environments[env]
        assert [s["Resource"] for s in ssm] == [
            f"arn:aws:ssm:{settings.region}:{settings.account}:parameter{parameter}"
        ]
        # Writes and deletes in the model repository: its prefix and its record, nothing of another group.
        writes = [s for s in own if any(a.startswith(("s3:Put", "s3:Delete")) for a in _actions(s))]
        assert {k for s in writes for k in s3_keys(s)} == {f"/models/{group}/*", f"/deployments/{group}.json"}


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


@pytest.mark.parametrize("env", CHAIN)
def test_one_inference_api_routes_by_group_and_every_route_is_authorized_validated_and_metered(serving, env):
    template = serving(env)
    assert len(template.find_resources("AWS::ApiGateway::RestApi")) == 1, "one API per environment"
    authorizer = logical(template.find_resources("AWS::ApiGateway::Authorizer"))
    resources = template.find_resources("AWS::ApiGateway::Resource")

    def path(logical_id) -> str:
        props = resources[logical_id]["Properties"]
        parent = props["ParentId"]
        above = path(parent["Ref"]) if "Ref" in parent else ""
        return f"{above}/{props['PathPart']}"

    methods = {
        (path(m["Properties"]["ResourceId"]["Ref"]), m["Properties"]["HttpMethod"]): m["Properties"]
        for m in template.find_resources("AWS::ApiGateway::Method").values()
    }
    assert set(methods) == {(INVOKE_ROUTE, "POST"), (GROUP_HEALTH_ROUTE, "GET"), (HEALTH_ROUTE, "GET")}
    assert INVOKE_ROUTE == "/groups/{group}/models/{customer}/invoke"
    for route, method in methods.items():
        assert method["AuthorizationType"] == "CUSTOM", route
        assert method["AuthorizerId"] == {"Ref": authorizer}, route
        assert method["ApiKeyRequired"] is True, f"{route}: metered by the usage plan"
        assert "RequestValidatorId" in method, route
        assert method["Integration"]["Type"] == "AWS_PROXY", route
    invoke = methods[(INVOKE_ROUTE, "POST")]
    assert invoke["RequestParameters"] == {
        "method.request.path.group": True,
        "method.request.path.customer": True,
        "method.request.header.Content-Type": True,
    }
    assert set(invoke["RequestModels"]) == {"application/json"}
    validator = only(template.find_resources("AWS::ApiGateway::RequestValidator"))["Properties"]
    assert validator["ValidateRequestBody"]
    assert validator["ValidateRequestParameters"]
    schema = only(template.find_resources("AWS::ApiGateway::Model"))["Properties"]["Schema"]
    assert (schema["required"], schema["properties"]["inputs"]["minItems"]) == (["inputs"], 1)


@pytest.mark.parametrize("env", CHAIN)
def test_the_invoke_lambda_knows_every_group_and_may_call_exactly_their_endpoints(
    serving, model_serving, synthesized, example, env
):
    template = serving(env)
    _name, function = function_with_handler(template, "lambdas.inference_api.handler")
    endpoint_names = {}
    for model in example.models:
        own = model_serving(env, model.name)
        endpoint = endpoint_of(own, model.name)
        endpoint_names[model.model_package_group] = own.to_json()["Resources"][endpoint]["Properties"]["EndpointName"]
    sagemaker = [s for s in statements(template, role_of(function)) if "sagemaker" in json.dumps(s["Action"])]
    settings = example.environments[env]
    # By name (SageMaker lower-cases it in the ARN), not by reference: nothing of a model stack is imported here.
    assert sagemaker == [
        {
            "Action": ["sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"],
            "Effect": "Allow",
            "Resource": sorted(
                f"arn:aws:sagemaker:{settings.region}:{settings.account}:endpoint/{name.lower()}"
                for name in endpoint_names.values()
            ),
        }
    ]
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables[names.ENVIRONMENT] == env
    assert not [name for name in variables if "MODELS" in name], "the models' list is not in the 4 KB environment"
    # The served models ship in the function's code package, each with its endpoint's name (set at synth).
    served = json.loads(synthesized.package_file(function, names.SERVED_MODELS_FILE))
    assert served == [
        {"model": model.name, "group": model.model_package_group, "endpoint": endpoint_names[model.model_package_group]}
        for model in example.models
    ]
    for model in example.models:
        name = endpoint_names[model.model_package_group]
        # Its stack's name (project, environment, model), the group where the model is named otherwise, a hash.
        readable = f"modelgate-{env}-Serving-{model.name}"
        if model.name != model.model_package_group:
            readable += f"-{model.model_package_group}"
        assert re.fullmatch(f"{readable}-[0-9a-f]{{8}}", name), name
        assert len(name) <= names.ENDPOINT_NAME_MAX
    reads = [k for s in statements(template, role_of(function)) for k in s3_keys(s)]
    assert reads == ["/deployments/*"], "deployment records only, never archives"


@pytest.mark.parametrize("env", CHAIN)
def test_the_api_stack_deploys_after_the_model_stacks_and_imports_nothing_of_theirs(synthesized, example, env):
    """The API names the endpoints, so it must be updated after they exist (a new model's endpoint, or the new
    endpoints of an upgrade from the one Serving stack, are created before the API routes to them and before the
    old ones are deleted). Ordering only: a model stack exports nothing, so adding or removing a model never
    touches an export that another stack imports (CloudFormation refuses to change those)."""
    stage = f"{example.project.name}-{env}"
    model_stacks = {model_serving_stack_id(model) for model in example.models}
    api = synthesized.stack(stage, "Serving")
    assert model_stacks | {"Storage"} <= set(api.depends_on)
    assert not [kind for kind in api.resources if kind.startswith("AWS::SageMaker::")], "no endpoint of any model"
    assert not [
        r
        for r in api.template["Resources"].values()
        if r["Properties"].get("Handler") == "lambdas.serving_deploy.handler"
    ], "no deploy step either"
    assert _referenced_stacks(api.template) == {f"{stage}-Storage"}, "only Storage's outputs"
    for model in example.models:
        own = synthesized.stack(stage, model_serving_stack_id(model))
        assert not own.template.get("Outputs"), f"{own.name} exports nothing"
        assert _referenced_stacks(own.template) == {f"{stage}-Storage"}
        assert set(own.depends_on) == {"Storage"}, "a model's serving needs only the stateful stack"


def _referenced_stacks(template: dict) -> set[str]:
    """Stacks whose outputs `template` reads (CDK's cross-stack references: Fn::GetStackOutput / Fn::ImportValue)."""
    found = set()
    for node in _nodes(template):
        if isinstance(node, dict) and "Fn::GetStackOutput" in node:
            found.add(node["Fn::GetStackOutput"]["StackName"])
        elif isinstance(node, dict) and "Fn::ImportValue" in node:
            found.add(str(node["Fn::ImportValue"]).split(":")[0])
    return found


def _nodes(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _nodes(child)


@pytest.mark.parametrize("env", CHAIN)
def test_api_gateway_may_invoke_the_lambda_only_through_the_deployed_routes(serving, env):
    """Not through the console's test button (stage test-invoke-stage), which skips the JWT authorizer."""
    template = serving(env)
    invoke, _function = function_with_handler(template, "lambdas.inference_api.handler")
    stage = logical(template.find_resources("AWS::ApiGateway::Stage"))
    api = logical(template.find_resources("AWS::ApiGateway::RestApi"))
    routes = set()
    for permission in template.find_resources("AWS::Lambda::Permission").values():
        properties = permission["Properties"]
        if properties["FunctionName"] != {"Fn::GetAtt": [invoke, "Arn"]}:
            continue
        assert properties["Principal"] == "apigateway.amazonaws.com"
        _prefix, rest_api, slash, deployed_stage, route = properties["SourceArn"]["Fn::Join"][1]
        assert (rest_api, slash, deployed_stage) == ({"Ref": api}, "/", {"Ref": stage}), properties["SourceArn"]
        routes.add(route)
    assert routes == {"/POST/groups/*/models/*/invoke", "/GET/groups/*/health", "/GET/health"}


@pytest.mark.parametrize("env", CHAIN)
def test_a_models_alarms_and_failed_deploys_notify_its_approvers_and_the_apis_the_environments(
    serving, model_serving, example, env
):
    """Each model stack has its own failure queue and alarm topic (no reference to another serving stack), whose
    subscribers are the people who approve that model in this environment; the API's alarms e-mail the
    environment's approvers."""
    for model in example.models:
        template = model_serving(env, model.name)
        alarms = template.find_resources("AWS::CloudWatch::Alarm")
        metrics = {a["Properties"].get("MetricName") for a in of_model(alarms, model.name).values()}
        assert {"Invocation5XXErrors", "ModelLatency", "ModelLoadingWaitTime", "ModelCacheHit"} <= metrics, model.name
        for alarm in of_model(alarms, model.name).values():
            assert alarm["Properties"]["AlarmDescription"].startswith(
                f"Triton endpoint of {model.model_package_group}:"
            )
        assert "ApproximateNumberOfMessagesVisible" in {a["Properties"].get("MetricName") for a in alarms.values()}
        topic = logical(template.find_resources("AWS::SNS::Topic"))
        for alarm in alarms.values():
            assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}], alarm["Properties"]["AlarmDescription"]
        subscribers = {
            sub["Properties"]["Endpoint"] for sub in template.find_resources("AWS::SNS::Subscription").values()
        }
        assert subscribers == set(model.environments[env].approvers.emails)
    template = serving(env)
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    assert {a["Properties"].get("MetricName") for a in alarms.values()} == {"5XXError", "Errors"}
    assert template.find_resources("AWS::SQS::Queue") == {}, "nothing of the API fails asynchronously"
    topic = logical(template.find_resources("AWS::SNS::Topic"))
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}], alarm["Properties"]["AlarmDescription"]
    subscribers = {sub["Properties"]["Endpoint"] for sub in template.find_resources("AWS::SNS::Subscription").values()}
    assert subscribers == set(example.environments[env].approvers.emails)


@pytest.mark.parametrize("env", CHAIN)
def test_the_authorizer_verifies_tokens_of_the_configured_issuer(serving, example, env):
    template = serving(env)
    jwt = example.environments[env].api.jwt
    authorizer = only(template.find_resources("AWS::ApiGateway::Authorizer"))["Properties"]
    assert (authorizer["Type"], authorizer["IdentitySource"]) == ("TOKEN", "method.request.header.Authorization")
    assert authorizer["IdentityValidationExpression"].startswith("^Bearer ")
    assert authorizer["AuthorizerResultTtlInSeconds"] == 60
    _, function = function_with_handler(template, "lambdas.inference_authorizer.handler")
    variables = function["Properties"]["Environment"]["Variables"]
    assert (variables[names.JWT_ISSUER], variables[names.JWT_AUDIENCE], variables[names.JWKS_URL]) == (
        jwt.issuer,
        jwt.audience,
        jwt.jwks_url,
    )


@pytest.mark.parametrize("env", CHAIN)
def test_throttling_usage_plan_access_logs_and_waf(serving, example, env):
    template = serving(env)
    api = example.environments[env].api
    rest = only(template.find_resources("AWS::ApiGateway::RestApi"))["Properties"]
    assert rest["ApiKeySourceType"] == "AUTHORIZER", "JWT callers send no API key: the authorizer supplies it"
    assert rest["BinaryMediaTypes"] == ["application/vnd.sagemaker-triton.binary+json"]
    stage = only(template.find_resources("AWS::ApiGateway::Stage"))["Properties"]
    (settings,) = stage["MethodSettings"]
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (
        api.throttle_rate,
        api.throttle_burst,
    )
    assert (settings["DataTraceEnabled"], settings["LoggingLevel"]) == (False, "ERROR")
    assert "$context.requestId" in stage["AccessLogSetting"]["Format"]
    plan = only(template.find_resources("AWS::ApiGateway::UsagePlan"))["Properties"]
    assert plan["Throttle"] == {"RateLimit": api.throttle_rate, "BurstLimit": api.throttle_burst}
    key = logical(template.find_resources("AWS::ApiGateway::ApiKey"))
    assert only(template.find_resources("AWS::ApiGateway::UsagePlanKey"))["Properties"]["KeyId"] == {"Ref": key}
    assert "Stage" in json.dumps(only(template.find_resources("AWS::WAFv2::WebACLAssociation"))["Properties"])
    acl = only(template.find_resources("AWS::WAFv2::WebACL"))["Properties"]
    assert {rule["Name"] for rule in acl["Rules"]} >= {"AWSManagedRulesCommonRuleSet", "per-ip-rate"}


@pytest.mark.parametrize("env", CHAIN)
def test_gateway_refusals_are_clear_json_and_retryable_ones_say_when(serving, env):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in serving(env).find_resources("AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["THROTTLED"]["StatusCode"] == "429"
    assert responses["THROTTLED"]["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"
    assert responses["AUTHORIZER_FAILURE"]["StatusCode"] == "503", "JWKS outage: retry, not a bare 500"
    assert responses["UNAUTHORIZED"]["ResponseParameters"]["gatewayresponse.header.WWW-Authenticate"] == "'Bearer'"
    assert responses["DEFAULT_5XX"]["StatusCode"] == "502"
    assert "StatusCode" not in responses["DEFAULT_4XX"], "other refusals keep API Gateway's status"
    for response in responses.values():
        body = response["ResponseTemplates"]["application/json"].replace("$context.error.validationErrorString", "x")
        assert set(json.loads(body.replace("$context.error.messageString", '"x"'))) == {"error", "code"}


def _api_with(models: int) -> Template:
    """The template of an InferenceApi for `models` groups with long names, in a bare stack."""
    stack = Stack(
        App(context=feature_flags()), "Limits", env=CdkEnvironment(account="222222222222", region="eu-west-1")
    )
    bucket = s3.Bucket(stack, "ModelRepository")
    layer = lambda_.LayerVersion.from_layer_version_arn(
        stack, "Layer", "arn:aws:lambda:eu-west-1:222222222222:layer:deps:1"
    )
    served = [
        names.ServedModel(
            f"model-{i:03d}", f"model-package-group-with-a-long-name-{i:03d}", "x" * names.ENDPOINT_NAME_MAX
        )
        for i in range(models)
    ]
    api = parse_config(yaml.safe_load(EXAMPLE.read_text()), str(EXAMPLE)).environments["sandbox"].api
    InferenceApi(
        stack, "InferenceApi", api=api, environment="sandbox", served=served, model_repository=bucket, layer=layer
    )
    return Template.from_stack(stack)


def test_the_invoke_functions_environment_does_not_grow_with_the_models():
    """Lambda refuses a function whose environment variables exceed 4 KB. The served models' list (~150 bytes a
    model with long names: over 4 KB from about 28 models on, the old ceiling) ships in the code package, so the
    environment of 200 models is that of one; Lambda's limit is still checked at synth for what stays in it."""
    environments = []
    for models in (1, 200):
        _name, function = function_with_handler(_api_with(models), "lambdas.inference_api.handler")
        environments.append(function["Properties"]["Environment"]["Variables"])
    assert environments[0] == environments[1]
    assert set(environments[0]) == {names.BUCKET, names.ENVIRONMENT, "POWERTOOLS_LOG_LEVEL"}
    group = "model-package-group-with-a-long-name"
    served = [names.ServedModel(f"m-{i:03d}", f"{group}-{i:03d}", "x" * 63) for i in range(30)]
    assert len(names.served_models_value(served)) > 4096, "what no longer has to fit"
    with pytest.raises(names.EnvironmentTooLarge, match=r"f: environment variables take 4097 bytes .*\(at most 4096"):
        names.check_environ_size("f", {"A": "x" * 4096})


def test_a_serving_stack_without_models_is_refused_saying_what_to_pass(example):
    env = example.environments["sandbox"]
    stage = Stage(App(context=feature_flags()), "Empty", env=CdkEnvironment(account=env.account, region=env.region))
    storage = StorageStack(stage, "Storage")
    with pytest.raises(ValueError, match=r"Serving \(sandbox\): no models to serve; pass config.models"):
        ServingStack(stage, "Serving", environment=env, served=(), storage=storage)


# -- the 500-resource ceiling: no serving stack grows with the models -------------------------------------------
MANY = 20  # past the 18 models where the one Serving stack of earlier releases (51 + 24 resources a model) stopped


def many_models_config(count: int = MANY):
    """The example with `count` models (two-digit indices: no group name is a substring of another)."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["models"] = [{"name": f"model-{i:02d}", "model_package_group": f"customer-group-{i:02d}"} for i in range(count)]
    return parse_config(raw, f"{EXAMPLE} with {count} models")


@pytest.fixture(scope="session")
def many_serving(tmp_path_factory):
    config = many_models_config()
    first = config.chain.first
    synthesized = once_per_run(
        tmp_path_factory, "serving-many.out", lambda out: synthesize_example(config, out, environments=(first,))
    )
    return config, first, synthesized


def test_twenty_models_synth_nag_clean_with_every_stack_far_under_500_resources(many_serving, synthesized, example):
    """The binding limit of the one Serving stack is gone: the API stack has as many resources with 20 models as
    with 2, each model stack as many as any other (the example's energy-forecast in the same environment), and
    nothing of a model is in another model's stack."""
    config, env, many = many_serving
    assert many.findings == [], [str(f) for f in many.findings]
    stage = f"{config.project.name}-{env}"
    stacks = {s.name: s for s in many.stacks if s.stage == stage}
    assert set(stacks) == {"Storage", "Serving", *(model_serving_stack_id(m) for m in config.models)}
    assert max(sum(s.resources.values()) for s in stacks.values()) < 100, {
        name: sum(s.resources.values()) for name, s in stacks.items()
    }
    two = {s.name: s for s in synthesized.stacks if s.stage == stage}
    assert stacks["Serving"].resources == two["Serving"].resources, "the API stack does not grow with the models"
    one_model = two[model_serving_stack_id(example.model("energy-forecast"))].resources  # no overrides
    groups = [model.model_package_group for model in config.models]
    for model in config.models:
        stack = stacks[model_serving_stack_id(model)]
        assert stack.resources == one_model, model.name
        text = json.dumps(stack.template)
        assert [group for group in groups if group in text] == [model.model_package_group], "only its own model"
    _, invoke = function_with_handler(Template.from_json(stacks["Serving"].template), "lambdas.inference_api.handler")
    served = json.loads(many.package_file(invoke, names.SERVED_MODELS_FILE))
    assert [entry["group"] for entry in served] == groups, "and the API routes to all of them"


@pytest.mark.parametrize("env", CHAIN)
def test_no_endpoint_name_is_one_the_single_serving_stack_of_earlier_releases_gave(model_serving, example, env):
    """On the upgrade, each model stack creates its endpoint while the old Serving stack's still exists (it is
    deleted by the Serving update that follows): a name both would use would make the create fail. The old names
    were `endpoint_name(<stage>-Serving, group, hash of <stage>/Serving/Model<Name>/Triton/Endpoint<type>)`."""
    from constructs import Construct

    from infra.constructs.triton_endpoint import endpoint_id, endpoint_name

    old_stage = Stage(App(), f"{example.project.name}-{env}")
    old_stack = Stack(old_stage, "Serving")
    for model in example.models:
        template = model_serving(env, model.name)
        new = template.to_json()["Resources"][endpoint_of(template, model.name)]["Properties"]["EndpointName"]
        triton = Construct(Construct(old_stack, model_construct_id(model.name)), "Triton")
        old_endpoint = Construct(triton, endpoint_id(model.environments[env].serving.instance_type))
        old = endpoint_name(old_stack.stack_name, model.model_package_group, old_endpoint.node.addr[2:])
        assert old.startswith(f"modelgate-{env}-Serving-{model.model_package_group}-"), old
        assert new != old, model.name
