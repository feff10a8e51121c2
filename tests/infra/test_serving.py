"""The Serving stack of every environment: what must hold for the endpoint, the deploy step and the API."""

from __future__ import annotations

import json

import pytest

from infra.instance_types import gpu_count, has_instance_store
from infra.triton_images import image_uri
from modelgate.environments import ENVIRONMENTS
from modelgate.parameters import parameter_name
from modelgate.serving import settings as names


def only(resources: dict) -> dict:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.values()))


def logical(resources: dict) -> str:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources))


def function_with_handler(template, handler: str) -> tuple[str, dict]:
    found = {
        k: v
        for k, v in template.find_resources("AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == handler
    }
    return logical(found), only(found)


def statements(template, role_logical: str) -> list[dict]:
    policies = template.find_resources("AWS::IAM::Policy")
    return [
        statement
        for policy in policies.values()
        if {"Ref": role_logical} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def role_of(function: dict) -> str:
    return function["Properties"]["Role"]["Fn::GetAtt"][0]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_model_is_multimodel_triton_for_the_region_reading_the_mme_prefix(template, config, env):
    serving = template(env, "Serving")
    settings = config.environments[env]
    container = only(serving.find_resources("AWS::SageMaker::Model"))["Properties"]["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["Image"] == image_uri(settings.region, settings.serving.triton_version)
    url = container["ModelDataUrl"]["Fn::Join"][1]
    assert (url[0], url[2]) == ("s3://", "/models/"), "the MME prefix of the environment's model-repository bucket"
    assert "ModelRepository" in json.dumps(url[1])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_endpoint_runs_the_configured_gpu_type_with_min_instances(template, config, env):
    serving = template(env, "Serving")
    settings = config.environments[env].serving
    props = only(serving.find_resources("AWS::SageMaker::EndpointConfig"))["Properties"]
    (variant,) = props["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == (
        settings.instance_type,
        settings.min_instances,
    )
    # SageMaker refuses KmsKeyId for instance types with NVMe instance storage (hardware-encrypted anyway).
    assert ("KmsKeyId" in props) is not has_instance_store(settings.instance_type)
    # CloudFormation names them: two deployments in one account never collide.
    for kind, name in (
        ("AWS::SageMaker::Model", "ModelName"),
        ("AWS::SageMaker::EndpointConfig", "EndpointConfigName"),
        ("AWS::SageMaker::Endpoint", "EndpointName"),
    ):
        assert name not in only(serving.find_resources(kind))["Properties"], kind


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_data_capture_follows_config(template, config, env):
    props = only(template(env, "Serving").find_resources("AWS::SageMaker::EndpointConfig"))["Properties"]
    if config.environments[env].serving.data_capture:
        capture = props["DataCaptureConfig"]
        assert capture["EnableCapture"] is True
        assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
        assert "KmsKeyId" in capture
    else:
        assert "DataCaptureConfig" not in props


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_autoscaling_bounds_and_targets_come_from_config(template, config, env):
    serving = template(env, "Serving")
    settings = config.environments[env].serving
    target = only(serving.find_resources("AWS::ApplicationAutoScaling::ScalableTarget"))["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (settings.min_instances, settings.max_instances)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert target["ServiceNamespace"] == "sagemaker"
    policies = [
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for p in serving.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    ]
    by_kind = {
        (p.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        or p["CustomizedMetricSpecification"]["MetricName"]: p["TargetValue"]
        for p in policies
    }
    assert by_kind == {
        "SageMakerVariantInvocationsPerInstance": settings.target_invocations_per_instance,
        "GPUUtilization": settings.target_gpu_utilization * gpu_count(settings.instance_type),
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_alarms_cover_errors_latency_model_loading_and_cache_misses_and_notify(template, env):
    serving = template(env, "Serving")
    alarms = serving.find_resources("AWS::CloudWatch::Alarm").values()
    metrics = {a["Properties"].get("MetricName") for a in alarms}
    assert {
        "Invocation5XXErrors",
        "ModelLatency",
        "ModelLoadingWaitTime",
        "ModelCacheHit",
        "GPUMemoryUtilization",
        "5XXError",
        "Errors",
        "ApproximateNumberOfMessagesVisible",
    } <= metrics
    topic = logical(serving.find_resources("AWS::SNS::Topic"))
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}], alarm["Properties"]["AlarmDescription"]
    cache = next(a for a in alarms if a["Properties"].get("MetricName") == "ModelCacheHit")["Properties"]
    assert cache["ComparisonOperator"] == "LessThanThreshold", "cache misses: a low hit rate alarms"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_routes_are_authorized_by_the_jwt_authorizer_validated_and_metered(template, env):
    serving = template(env, "Serving")
    authorizer = logical(serving.find_resources("AWS::ApiGateway::Authorizer"))
    resources = {k: v["Properties"]["PathPart"] for k, v in serving.find_resources("AWS::ApiGateway::Resource").items()}
    methods = {
        (resources[m["Properties"]["ResourceId"]["Ref"]], m["Properties"]["HttpMethod"]): m["Properties"]
        for m in serving.find_resources("AWS::ApiGateway::Method").values()
    }
    assert set(methods) == {("invoke", "POST"), ("health", "GET")}
    for route, method in methods.items():
        assert method["AuthorizationType"] == "CUSTOM", route
        assert method["AuthorizerId"] == {"Ref": authorizer}, route
        assert method["ApiKeyRequired"] is True, f"{route}: metered by the usage plan"
        assert "RequestValidatorId" in method, route
        assert method["Integration"]["Type"] == "AWS_PROXY", route
    invoke = methods[("invoke", "POST")]
    assert invoke["RequestParameters"] == {
        "method.request.path.model": True,
        "method.request.header.Content-Type": True,
    }
    assert set(invoke["RequestModels"]) == {"application/json"}
    validator = only(serving.find_resources("AWS::ApiGateway::RequestValidator"))["Properties"]
    assert validator["ValidateRequestBody"]
    assert validator["ValidateRequestParameters"]
    schema = only(serving.find_resources("AWS::ApiGateway::Model"))["Properties"]["Schema"]
    assert schema["required"] == ["inputs"]
    assert schema["properties"]["inputs"]["minItems"] == 1
    assert sorted(resources.values()) == ["health", "invoke", "models", "{model}"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_authorizer_verifies_tokens_of_the_configured_issuer(template, config, env):
    serving = template(env, "Serving")
    jwt = config.environments[env].api.jwt
    authorizer = only(serving.find_resources("AWS::ApiGateway::Authorizer"))["Properties"]
    assert authorizer["Type"] == "TOKEN"
    assert authorizer["IdentitySource"] == "method.request.header.Authorization"
    assert authorizer["IdentityValidationExpression"].startswith("^Bearer ")
    assert authorizer["AuthorizerResultTtlInSeconds"] == 60
    _, function = function_with_handler(serving, "lambdas.inference_authorizer.handler")
    variables = function["Properties"]["Environment"]["Variables"]
    assert (variables[names.JWT_ISSUER], variables[names.JWT_AUDIENCE], variables[names.JWKS_URL]) == (
        jwt.issuer,
        jwt.audience,
        jwt.jwks_url,
    )
    assert "Authorizer" in json.dumps(authorizer["AuthorizerUri"]), "the authorizer Lambda is the one invoked"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_throttling_usage_plan_access_logs_and_waf(template, config, env):
    serving = template(env, "Serving")
    api = config.environments[env].api
    rest = only(serving.find_resources("AWS::ApiGateway::RestApi"))["Properties"]
    assert rest["ApiKeySourceType"] == "AUTHORIZER", "JWT callers send no API key: the authorizer supplies it"
    assert rest["BinaryMediaTypes"] == ["application/vnd.sagemaker-triton.binary+json"]
    stage = only(serving.find_resources("AWS::ApiGateway::Stage"))["Properties"]
    (settings,) = stage["MethodSettings"]
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (
        api.throttle_rate,
        api.throttle_burst,
    )
    assert settings["DataTraceEnabled"] is False
    assert settings["LoggingLevel"] == "ERROR"
    assert "DestinationArn" in stage["AccessLogSetting"]
    assert "$context.requestId" in stage["AccessLogSetting"]["Format"]
    plan = only(serving.find_resources("AWS::ApiGateway::UsagePlan"))["Properties"]
    assert plan["Throttle"] == {"RateLimit": api.throttle_rate, "BurstLimit": api.throttle_burst}
    assert len(plan["ApiStages"]) == 1
    key = logical(serving.find_resources("AWS::ApiGateway::ApiKey"))
    assert only(serving.find_resources("AWS::ApiGateway::UsagePlanKey"))["Properties"]["KeyId"] == {"Ref": key}
    association = only(serving.find_resources("AWS::WAFv2::WebACLAssociation"))["Properties"]
    assert "Stage" in json.dumps(association["ResourceArn"])
    acl = only(serving.find_resources("AWS::WAFv2::WebACL"))["Properties"]
    assert {rule["Name"] for rule in acl["Rules"]} >= {"AWSManagedRulesCommonRuleSet", "per-ip-rate"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_gateway_refusals_are_clear_json_and_retryable_ones_say_when(template, env):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in template(env, "Serving").find_resources("AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["THROTTLED"]["StatusCode"] == "429"
    assert responses["THROTTLED"]["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"
    assert responses["AUTHORIZER_FAILURE"]["StatusCode"] == "503", "JWKS outage: retry, not a bare 500"
    assert responses["UNAUTHORIZED"]["ResponseParameters"]["gatewayresponse.header.WWW-Authenticate"] == "'Bearer'"
    assert responses["DEFAULT_5XX"]["StatusCode"] == "502"
    assert "StatusCode" not in responses["DEFAULT_4XX"], "other refusals keep API Gateway's status"
    for response in responses.values():
        template = response["ResponseTemplates"]["application/json"]
        template = template.replace("$context.error.validationErrorString", "x")
        body = json.loads(template.replace("$context.error.messageString", '"x"'))
        assert set(body) == {"error", "code"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_api_gateway_may_invoke_the_lambda_only_through_the_deployed_routes(template, env):
    """Not through the console's test button (stage test-invoke-stage), which skips the JWT authorizer."""
    serving = template(env, "Serving")
    invoke, _function = function_with_handler(serving, "lambdas.inference_api.handler")
    stage = logical(serving.find_resources("AWS::ApiGateway::Stage"))
    api = logical(serving.find_resources("AWS::ApiGateway::RestApi"))
    routes = set()
    for permission in serving.find_resources("AWS::Lambda::Permission").values():
        properties = permission["Properties"]
        if properties["FunctionName"] != {"Fn::GetAtt": [invoke, "Arn"]}:
            continue
        assert properties["Principal"] == "apigateway.amazonaws.com"
        _prefix, rest_api, slash, deployed_stage, route = properties["SourceArn"]["Fn::Join"][1]
        assert (rest_api, slash, deployed_stage) == ({"Ref": api}, "/", {"Ref": stage}), properties["SourceArn"]
        routes.add(route)
    assert routes == {"/POST/models/*/invoke", "/GET/health"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_invoke_lambda_may_call_only_this_endpoint(template, env):
    serving = template(env, "Serving")
    endpoint = logical(serving.find_resources("AWS::SageMaker::Endpoint"))
    _name, function = function_with_handler(serving, "lambdas.inference_api.handler")
    sagemaker = [s for s in statements(serving, role_of(function)) if "sagemaker" in json.dumps(s["Action"])]
    assert sagemaker == [
        {
            "Action": ["sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"],
            "Effect": "Allow",
            "Resource": {"Ref": endpoint},
        }
    ]
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables[names.ENDPOINT] == {"Fn::GetAtt": [endpoint, "EndpointName"]}
    assert variables[names.ENVIRONMENT] == env


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_deploy_step_runs_on_its_parameters_changes_and_daily(template, config, env):
    serving = template(env, "Serving")
    name, function = function_with_handler(serving, "lambdas.serving_deploy.handler")
    parameter = parameter_name(config.project.name, config.project.model_package_group, env)
    assert function["Properties"]["Environment"]["Variables"][names.PARAMETER] == parameter
    # One run at a time: tests/infra/test_first_deploy.py (problem 6) and tests/unit/test_deploy_lock.py.
    rules = list(serving.find_resources("AWS::Events::Rule").values())
    patterns = [r["Properties"]["EventPattern"] for r in rules if "EventPattern" in r["Properties"]]
    assert patterns == [
        {"source": ["aws.ssm"], "detail-type": ["Parameter Store Change"], "detail": {"name": [parameter]}}
    ]
    assert [r["Properties"]["ScheduleExpression"] for r in rules if "ScheduleExpression" in r["Properties"]] == [
        "rate(1 day)"
    ]
    queue = logical(serving.find_resources("AWS::SQS::Queue"))
    for rule in rules:
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [name, "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}
    ssm = [s for s in statements(serving, role_of(function)) if s["Action"] == "ssm:GetParameter"]
    assert len(ssm) == 1
    settings = config.environments[env]
    assert ssm[0]["Resource"] == f"arn:aws:ssm:{settings.region}:{settings.account}:parameter{parameter}"


# Cross-account reads of registered versions (any environment's artifacts): tests/infra/test_first_deploy.py.
