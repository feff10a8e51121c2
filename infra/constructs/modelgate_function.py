"""A ModelGate Lambda function: the shared code asset and dependency layer, its own role and log group.

`files` ({name: text}) ship at the root of the function's code package: settings that grow with the number of
models (the model lists), which would not fit Lambda's 4 KB environment. The handler reads them at
$LAMBDA_TASK_ROOT (modelgate.function_settings.bundled_json).

The role gets no AWS managed policy (nag IAM4): only write access to the function's own log group, plus what
the caller grants. Asynchronous functions get an on-failure destination so no event is ever dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.build.lambda_bundle import ARCHITECTURE, RUNTIME, function_code

# What every ModelGate function's environment carries besides its caller's values.
FUNCTION_ENVIRONMENT = {"POWERTOOLS_LOG_LEVEL": "INFO"}


class ModelGateFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        environment: dict[str, str],
        layer: lambda_.ILayerVersion,
        files: Mapping[str, str] | None = None,
        timeout_seconds: int = 30,
        memory_size: int = 512,
        on_failure: sqs.IQueue | None = None,
        retry_attempts: int = 2,
    ) -> None:
        """`on_failure`: the function is invoked asynchronously (EventBridge); events that still fail after
        `retry_attempts` retries, or wait longer than 6 hours, land in this queue."""
        super().__init__(scope, construct_id)
        self.description = description
        self.log_group = logs.LogGroup(
            self, "Logs", retention=logs.RetentionDays.ONE_YEAR, removal_policy=RemovalPolicy.DESTROY
        )
        self.role = iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=description
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=function_code(self.node.path, files),
            handler=handler,
            layers=[layer],
            role=self.role,
            log_group=self.log_group,
            description=description,
            environment={**environment, **FUNCTION_ENVIRONMENT},
            timeout=Duration.seconds(timeout_seconds),
            memory_size=memory_size,
            on_failure=destinations.SqsDestination(on_failure) if on_failure is not None else None,
            retry_attempts=retry_attempts if on_failure is not None else None,
            max_event_age=Duration.hours(6) if on_failure is not None else None,
        )
        self.log_group.grant_write(self.role)

    def alarm_on_errors(self) -> cloudwatch.Alarm:
        """An alarm as soon as one invocation fails (within 5 minutes); the caller adds its actions."""
        return cloudwatch.Alarm(
            self,
            "ErrorsAlarm",
            alarm_description=f"{self.description}: invocations failed",
            metric=self.function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
