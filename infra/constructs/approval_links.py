"""The approval API of one environment, for every model: API Gateway REST (+ WAF) -> the approval-api Lambda,
which shows confirmation pages, signs approvers in (OIDC, the environment's Cognito pool) and records decisions.
The links' model package group says whose settings (approvers group, quorum) apply.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.firewall import ManagedRuleGroup, protect_stage
from infra.constructs.modelgate_function import ModelGateFunction

API_STAGE = "v1"
API_RATE_PER_SECOND, API_BURST = 10, 20  # people clicking links; anything faster is not a person
ROUTES = ("links/{action}", "auth/callback")  # the API's resource paths (nag suppressions, tests)


def rest_api(stack: Stack, environment: str) -> apigateway.RestApi:
    """The REST API. Created in the stack itself so its logical id (hence its id and URL: links already sent by
    e-mail, the sign-in callback) stays put; its routes are added by ApprovalLinks."""
    access_logs = logs.LogGroup(stack, "ApiAccessLogs", retention=logs.RetentionDays.ONE_YEAR)
    return apigateway.RestApi(
        stack,
        "Api",
        description=f"ModelGate approval links ({environment})",
        endpoint_types=[apigateway.EndpointType.REGIONAL],
        cloud_watch_role=False,  # the account's one role is the Storage stack's
        deploy_options=apigateway.StageOptions(
            stage_name=API_STAGE,
            throttling_rate_limit=API_RATE_PER_SECOND,
            throttling_burst_limit=API_BURST,
            logging_level=apigateway.MethodLoggingLevel.ERROR,
            data_trace_enabled=False,  # request bodies carry link tokens: never log them
            access_log_destination=apigateway.LogGroupLogDestination(access_logs),
            access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                caller=False,
                http_method=True,
                ip=True,
                protocol=True,
                request_time=True,
                resource_path=True,
                response_length=True,
                status=True,
                user=False,
            ),
        ),
    )


def api_url(api: apigateway.RestApi) -> str:
    stack = Stack.of(api)
    return f"https://{api.rest_api_id}.execute-api.{stack.region}.{stack.url_suffix}/{API_STAGE}"


class ApprovalLinks(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: apigateway.RestApi,
        environment: str,
        environ: dict[str, str],
        files: Mapping[str, str],  # the functions' settings files (ApprovalSettings.bundled_files)
        layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)
        self.api = api
        # The function is this construct's default child ("Default" is left out of logical ids), so its
        # resources keep the logical ids they had as the stack's own "ApprovalApi" function.
        self.function = ModelGateFunction(
            self,
            "Default",
            handler="lambdas.approval_api.handler",
            description=f"ModelGate: approval pages and decisions ({environment})",
            environment=environ,
            files=files,
            layer=layer,
        )
        # No test-invoke permissions: the console test button is not how these pages are used.
        integration = apigateway.LambdaIntegration(self.function.function, allow_test_invoke=False)
        links = api.root.add_resource("links").add_resource("{action}")
        callback = api.root.add_resource("auth").add_resource("callback")
        validator = api.add_request_validator("Validator", validate_request_parameters=True, validate_request_body=True)
        routes = (
            (links, "GET", {"token": True}),
            (links, "HEAD", {"token": True}),  # link checkers: the page's headers, no body, no change
            (links, "POST", {}),
            (callback, "GET", {}),
        )
        for resource, method, query in routes:
            resource.add_method(
                method,
                integration,
                request_validator=validator,
                request_parameters={f"method.request.querystring.{name}": req for name, req in query.items()},
            )
        # AWS's common and known-bad-inputs rule sets (Log4j-style lookups, exploitable paths) as on the inference
        # API; 300 requests per IP in 5 minutes is far more than a person clicking links. In the stack itself:
        # a replaced association would detach the ACL from the stage (infra/constructs/firewall.py).
        protect_stage(
            Stack.of(self),
            api.deployment_stage,
            metric_name="modelgate-approval",
            rule_groups=[
                ManagedRuleGroup("AWSManagedRulesCommonRuleSet"),
                ManagedRuleGroup("AWSManagedRulesKnownBadInputsRuleSet"),
            ],
            requests_per_ip=300,
        )
