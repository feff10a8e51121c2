"""A Lambda function of the training pipeline: the shared code asset and layer, its own role and log group,
a dead-letter queue for what it could not handle, and alarms on errors and on anything in that queue."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.lambda_bundle import ARCHITECTURE, RUNTIME, function_code


def encrypted_queue(scope: Construct, construct_id: str, *, key: kms.IKey | None, **kwargs) -> sqs.Queue:
    """KMS with the environment's data key, or (key=None) SQS-managed encryption for queues an AWS service
    writes to on its own behalf (an EventBridge target's DLQ), which the data key's policy does not admit."""
    encryption = {"encryption": sqs.QueueEncryption.SQS_MANAGED}
    if key is not None:
        encryption = {
            "encryption": sqs.QueueEncryption.KMS,
            "encryption_master_key": key,
            "data_key_reuse": Duration.hours(1),  # fewer KMS calls
        }
    return sqs.Queue(
        scope,
        construct_id,
        **encryption,
        enforce_ssl=True,
        retention_period=Duration.days(14),  # the longest SQS allows: time to look at what failed
        **kwargs,
    )


def alarm_on_messages(scope: Construct, construct_id: str, queue: sqs.IQueue, what: str) -> cloudwatch.Alarm:
    return cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=f"{what}: messages are waiting in the dead-letter queue; look at them, then redrive",
        metric=queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5), statistic="Maximum"),
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


class PipelineFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        environment: dict[str, str],
        layer: lambda_.ILayerVersion,
        key: kms.IKey,
        timeout_seconds: int = 30,
        asynchronous: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self, "Logs", retention=logs.RetentionDays.ONE_YEAR, removal_policy=RemovalPolicy.DESTROY
        )
        # No AWS managed policy (nag IAM4): its own log group, plus what the owner grants.
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.log_group.grant_write(self.role)
        # Asynchronous invocations (EventBridge) that still fail after Lambda's retries land here, and events
        # EventBridge could not deliver: SQS-managed encryption, since EventBridge itself writes to it.
        self.dead_letters = encrypted_queue(self, "DeadLetters", key=None) if asynchronous else None
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=function_code(),
            handler=handler,
            layers=[layer],
            role=self.role,
            log_group=self.log_group,
            description=description,
            environment={**environment, "POWERTOOLS_LOG_LEVEL": "INFO"},
            timeout=Duration.seconds(timeout_seconds),
            memory_size=256,
            dead_letter_queue=self.dead_letters,
            retry_attempts=2 if asynchronous else None,
        )
        self.errors_alarm = cloudwatch.Alarm(
            self,
            "ErrorsAlarm",
            alarm_description=f"{description}: invocations failed",
            metric=self.function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        if self.dead_letters is not None:
            alarm_on_messages(self, "DeadLettersAlarm", self.dead_letters, description)
