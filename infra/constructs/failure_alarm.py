"""Where failed asynchronous work goes: an encrypted queue that keeps the event, and an alarm that tells people."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.build.nag import suppress


def alarm_on_waiting_messages(scope: Construct, construct_id: str, queue: sqs.IQueue, description: str):
    """An alarm as soon as one message waits in `queue` (a dead-letter queue: someone must look at it)."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5)),
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


class AlarmTopic(Construct):
    """`topic`: an encrypted SNS topic that e-mails `notify`; alarms given to `notify_on` publish to it."""

    def __init__(
        self, scope: Construct, construct_id: str, *, key: kms.IKey, notify: tuple[str, ...], what: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Alarms", master_key=key, enforce_ssl=True, display_name=f"ModelGate: {what}")
        # CloudWatch publishes alarm notifications to the KMS-encrypted topic.
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        for address in notify:
            self.topic.add_subscription(subscriptions.EmailSubscription(address))

    def notify_on(self, *alarms: cloudwatch.IAlarm) -> None:
        for alarm in alarms:
            alarm.add_alarm_action(actions.SnsAction(self.topic))


class FailureQueue(AlarmTopic):
    """`queue`: the on-failure destination / DLQ; any message in it raises the alarm, which e-mails `notify`
    through `topic` (callers add their own alarms' actions to it: `notify_on`)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, key: kms.IKey, notify: tuple[str, ...], what: str
    ) -> None:
        super().__init__(scope, construct_id, key=key, notify=notify, what=what)
        # SSE-SQS: EventBridge can deliver to it as a DLQ without a key policy for events.amazonaws.com.
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.alarm = alarm_on_waiting_messages(
            self, "Alarm", self.queue, f"{what}: events failed after retries and wait in {construct_id}'s queue"
        )
        self.notify_on(self.alarm)
        suppress(
            self,
            "Queue/Resource",
            {
                "AwsSolutions-SQS3": "This queue IS the dead-letter queue: the on-failure destination of "
                "asynchronous Lambdas and the DLQ of EventBridge targets (alarmed when not empty)."
            },
        )
