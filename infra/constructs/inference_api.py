"""The inference API of one environment: API Gateway (REST) with a JWT authorizer in front of every model
group's multi-model endpoint, routing by group in the path.

    POST /groups/{group}/models/{customer}/invoke -> invoke Lambda -> InvokeEndpoint on the group's endpoint
                                                     (TargetModel=v<version>/<customer>.tar.gz of its record)
    GET  /groups/{group}/health                   -> the group's deployed version and its endpoint's status
    GET  /health                                  -> every group's
One API (one URL, one authorizer, one usage plan, one WAF) per environment however many models: a caller's
integration names the model group it wants, and adding a model adds no API.

API Gateway itself refuses what it can before any Lambda runs: tokens that are not `Bearer <jwt>` (the
authorizer's validation expression), requests without a Content-Type, JSON bodies that are not KServe v2
inference requests (request validator + model), bodies over API Gateway's limit, callers over the stage or
usage-plan throttle; AWS WAF sits in front. Its own error answers are JSON with a clear message (gateway
responses), and 429 / 503 carry Retry-After.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import Api
from infra.constructs.firewall import WINDOW_SECONDS, ManagedRuleGroup, protect_stage
from infra.constructs.modelgate_function import ModelGateFunction
from modelgate.serving import settings as names
from modelgate.serving.access import GROUP_HEALTH_ROUTE, HEALTH_ROUTE, INVOKE_ROUTE
from modelgate.serving.deployment import DEPLOYMENTS_PREFIX
from modelgate.serving.protocol import DATATYPES, TRITON_BINARY_JSON

STAGE = "v1"
AUTHORIZER_CACHE_SECONDS = 60  # a cached policy outlives the token's exp by at most this (plus the 60 s leeway)
TOKEN_PATTERN = r"^Bearer [A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*$"  # noqa: S105 (a pattern)


def _inference_request_schema() -> apigateway.JsonSchema:
    """KServe v2 inference request, as far as API Gateway can check it (the Lambda checks the rest)."""
    tensor = apigateway.JsonSchema(
        type=apigateway.JsonSchemaType.OBJECT,
        required=["name", "shape", "datatype"],
        properties={
            "name": apigateway.JsonSchema(type=apigateway.JsonSchemaType.STRING, min_length=1, max_length=128),
            "shape": apigateway.JsonSchema(
                type=apigateway.JsonSchemaType.ARRAY,
                items=apigateway.JsonSchema(type=apigateway.JsonSchemaType.INTEGER, minimum=0),
                max_items=8,
            ),
            "datatype": apigateway.JsonSchema(type=apigateway.JsonSchemaType.STRING, enum=sorted(DATATYPES)),
            "data": apigateway.JsonSchema(type=apigateway.JsonSchemaType.ARRAY),
            "parameters": apigateway.JsonSchema(type=apigateway.JsonSchemaType.OBJECT),
        },
    )
    return apigateway.JsonSchema(
        schema=apigateway.JsonSchemaVersion.DRAFT4,
        title="KServeV2InferenceRequest",
        type=apigateway.JsonSchemaType.OBJECT,
        required=["inputs"],
        properties={
            "id": apigateway.JsonSchema(type=apigateway.JsonSchemaType.STRING, max_length=256),
            "inputs": apigateway.JsonSchema(
                type=apigateway.JsonSchemaType.ARRAY, min_items=1, max_items=16, items=tensor
            ),
            "outputs": apigateway.JsonSchema(type=apigateway.JsonSchemaType.ARRAY, max_items=16),
            "parameters": apigateway.JsonSchema(type=apigateway.JsonSchemaType.OBJECT),
        },
    )


class InferenceApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: Api,
        environment: str,
        served: Sequence[names.ServedModel],  # (model, group, endpoint name), each endpoint in its model's stack
        model_repository: s3.IBucket,
        layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # The models' list ships in the function's code package (it grows with every model; Lambda caps the
        # environment at 4 KB). The bucket's name is generated at deploy time: checked at its longest.
        environ = {names.BUCKET: model_repository.bucket_name, names.ENVIRONMENT: environment}
        names.check_environ_size(
            f"{construct_id} ({environment}) invoke function",
            {**environ, names.BUCKET: "x" * 63, "POWERTOOLS_LOG_LEVEL": "INFO"},
        )
        self.invoke = ModelGateFunction(
            self,
            "Invoke",
            handler="lambdas.inference_api.handler",
            description=f"ModelGate inference API ({environment}): KServe v2 request -> its group's Triton endpoint",
            environment=environ,
            files=names.served_models_files(served),
            layer=layer,
            timeout_seconds=29,  # API Gateway's integration limit
            memory_size=1024,  # CPU for base64 and JSON of 4 MiB bodies
        )
        model_repository.grant_read(self.invoke.role, f"{DEPLOYMENTS_PREFIX}*")
        # By name, not by reference: the endpoints live in the models' stacks, which must not export anything to
        # this one (stacks/stage.py orders the deploys instead). SageMaker lower-cases the name in its ARNs.
        self.invoke.role.add_to_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint"],
                resources=[
                    stack.format_arn(
                        service="sagemaker", resource="endpoint", resource_name=model.endpoint_name.lower()
                    )
                    for model in served
                ],
            )
        )

        self.rest_api = apigateway.RestApi(
            self,
            "Api",
            description=f"ModelGate inference API ({environment})",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            binary_media_types=[TRITON_BINARY_JSON],  # the Lambda gets these bodies base64-encoded, byte-exact
            api_key_source_type=apigateway.ApiKeySourceType.AUTHORIZER,
            cloud_watch_role=False,  # the account's one role is the Storage stack's
            deploy_options=self._stage_options(api),
        )
        self.usage_plan_key = apigateway.ApiKey(
            self, "JwtCallersKey", description="Metering key of JWT callers (handed over by the authorizer)"
        )
        self.authorizer_function = ModelGateFunction(
            self,
            "Authorizer",
            handler="lambdas.inference_authorizer.handler",
            description=f"ModelGate inference API ({environment}): JWT verification and model scopes",
            environment={
                names.JWT_ISSUER: api.jwt.issuer,
                names.JWT_AUDIENCE: api.jwt.audience,
                names.JWKS_URL: api.jwt.jwks_url,
                names.USAGE_PLAN_KEY_ID: self.usage_plan_key.key_id,
            },
            layer=layer,
            timeout_seconds=10,
            memory_size=512,
        )
        self.authorizer_function.role.add_to_policy(
            iam.PolicyStatement(actions=["apigateway:GET"], resources=[self.usage_plan_key.key_arn])
        )
        self.authorizer = apigateway.TokenAuthorizer(
            self,
            "JwtAuthorizer",
            handler=self.authorizer_function.function,
            identity_source=apigateway.IdentitySource.header("Authorization"),
            validation_regex=TOKEN_PATTERN,
            results_cache_ttl=Duration.seconds(AUTHORIZER_CACHE_SECONDS),
        )
        self._routes()
        self._usage_plan(api)
        self._gateway_responses()
        self.firewall = protect_stage(
            self,
            self.rest_api.deployment_stage,
            metric_name="modelgate-inference",
            rule_groups=[
                # Inference bodies exceed the common set's 8 KB body limit legitimately (batches of windows);
                # the API's own limit (4 MiB, enforced by the Lambda) applies instead.
                ManagedRuleGroup("AWSManagedRulesCommonRuleSet", count_only=("SizeRestrictions_BODY",)),
                ManagedRuleGroup("AWSManagedRulesKnownBadInputsRuleSet"),
            ],
            requests_per_ip=max(100, api.throttle_rate * WINDOW_SECONDS),  # no lower than the stage's limit
        )
        self.alarms = self._alarms()

    def _stage_options(self, api: Api) -> apigateway.StageOptions:
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_YEAR)
        return apigateway.StageOptions(
            stage_name=STAGE,
            throttling_rate_limit=api.throttle_rate,
            throttling_burst_limit=api.throttle_burst,
            logging_level=apigateway.MethodLoggingLevel.ERROR,
            data_trace_enabled=False,  # bodies are customers' meter readings: never in logs
            metrics_enabled=True,
            access_log_destination=apigateway.LogGroupLogDestination(self.access_logs),
            access_log_format=apigateway.AccessLogFormat.custom(
                '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
                '"requestTime":"$context.requestTime","method":"$context.httpMethod",'
                '"path":"$context.resourcePath","model":"$context.path","status":"$context.status",'
                '"responseLength":"$context.responseLength","latency":"$context.responseLatency",'
                '"integrationLatency":"$context.integrationLatency","principal":"$context.authorizer.principalId",'
                '"client":"$context.authorizer.client","error":"$context.error.responseType"}'
            ),
        )

    def _routes(self) -> None:
        # Invoke permissions scoped to each method of the deployed stage, none for the console's test button: a
        # test invocation skips the JWT authorizer and the usage plan. (An API-wide permission would allow the
        # test-invoke stage too: CDK ignores allow_test_invoke=False unless permissions are scoped to methods.)
        integration = apigateway.LambdaIntegration(self.invoke.function, proxy=True, allow_test_invoke=False)
        validator = self.rest_api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        self.request_model = self.rest_api.add_model(
            "InferenceRequest", content_type="application/json", schema=_inference_request_schema()
        )
        # Every route: a JWT (the authorizer), metered (the usage plan's key, handed over by the authorizer), checked.
        guarded = {
            "authorizer": self.authorizer,
            "authorization_type": apigateway.AuthorizationType.CUSTOM,
            "api_key_required": True,
            "request_validator": validator,
        }
        invoke = self._resource(INVOKE_ROUTE)
        self.invoke_method = invoke.add_method(
            "POST",
            integration,
            request_models={"application/json": self.request_model},
            request_parameters={
                "method.request.path.group": True,
                "method.request.path.customer": True,
                "method.request.header.Content-Type": True,
            },
            **guarded,
        )
        self.group_health_method = self._resource(GROUP_HEALTH_ROUTE).add_method(
            "GET", integration, request_parameters={"method.request.path.group": True}, **guarded
        )
        self.health_method = self._resource(HEALTH_ROUTE).add_method("GET", integration, **guarded)

    def _resource(self, path: str) -> apigateway.IResource:
        """The API resource of a route path (modelgate/serving/access.py), created along the way."""
        return self.rest_api.root.resource_for_path(path)

    def _usage_plan(self, api: Api) -> None:
        self.usage_plan = self.rest_api.add_usage_plan(
            "UsagePlan",
            description="JWT callers of the inference API",
            throttle=apigateway.ThrottleSettings(rate_limit=api.throttle_rate, burst_limit=api.throttle_burst),
            api_stages=[apigateway.UsagePlanPerApiStage(api=self.rest_api, stage=self.rest_api.deployment_stage)],
        )
        self.usage_plan.add_api_key(self.usage_plan_key)

    def _gateway_responses(self) -> None:
        """API Gateway's own refusals as KServe-style JSON errors, with Retry-After where retrying helps."""
        json_error = "application/json"

        def respond(kind: apigateway.ResponseType, status: str, code: str, message: str, retry: int | None = None):
            headers = {"Retry-After": f"'{retry}'"} if retry else {}
            if kind.response_type == "UNAUTHORIZED":  # jsii hands out a new object per access: compare names
                headers["WWW-Authenticate"] = "'Bearer'"
            self.rest_api.add_gateway_response(
                kind.response_type,
                type=kind,
                status_code=status,
                response_headers=headers or None,
                templates={json_error: f'{{"error": "{message}", "code": "{code}"}}'},
            )

        # Every other refusal keeps API Gateway's status and says what it was, in the same JSON shape.
        self.rest_api.add_gateway_response(
            "DEFAULT_4XX",
            type=apigateway.ResponseType.DEFAULT_4_XX,
            templates={json_error: '{"error": $context.error.messageString, "code": "$context.error.responseType"}'},
        )
        respond(apigateway.ResponseType.UNAUTHORIZED, "401", "unauthorized", "a valid bearer token is required")
        respond(
            apigateway.ResponseType.BAD_REQUEST_BODY,
            "400",
            "invalid_request",
            "not a KServe v2 inference request: $context.error.validationErrorString",
        )
        respond(apigateway.ResponseType.THROTTLED, "429", "throttled", "too many requests", retry=1)
        # The authorizer failed (e.g. the issuer's JWKS is unreachable): a server-side problem, worth a retry.
        for kind in (
            apigateway.ResponseType.AUTHORIZER_FAILURE,
            apigateway.ResponseType.AUTHORIZER_CONFIGURATION_ERROR,
        ):
            respond(kind, "503", "authorizer_unavailable", "try again shortly", retry=5)
        respond(apigateway.ResponseType.DEFAULT_5_XX, "502", "gateway_error", "the request could not be completed")

    def _alarms(self) -> list[cloudwatch.Alarm]:
        five_minutes = Duration.minutes(5)
        above = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD

        def alarm(construct_id: str, metric: cloudwatch.IMetric, threshold: float, description: str):
            return cloudwatch.Alarm(
                self,
                construct_id,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=above,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )

        return [
            alarm(
                "Api5xx",
                self.rest_api.metric_server_error(period=five_minutes, statistic="Sum"),
                5,
                "Inference API: 5xx answers (endpoint unavailable, Lambda failures)",
            ),
            alarm(
                "InvokeErrors",
                self.invoke.function.metric_errors(period=five_minutes, statistic="Sum"),
                1,
                "Inference API: the invoke Lambda failed (a bug: SageMaker errors are answered, not raised)",
            ),
            alarm(
                "AuthorizerErrors",
                self.authorizer_function.function.metric_errors(period=five_minutes, statistic="Sum"),
                1,
                "Inference API: the JWT authorizer failed (JWKS unreachable?): callers get 503",
            ),
        ]
