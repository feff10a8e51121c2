"""EventBridge rules of deployed stacks, delivering to the real Lambda handlers that the templates target.

moto's EventBridge stores rules and matches events against them but does not invoke Lambda targets. Each Lambda
target of a pattern rule in the deployed templates is replaced, in the local AWS, by an SQS queue (same rule,
same target id), so moto's matcher (prefix, anything-but... as in AWS) decides what matches; `pump()` then
hands each matched event to the target function, as EventBridge's asynchronous invocation does. Events put by
the handlers themselves (promotion requests on the next environment's bus) flow through
the same rules. Scheduled rules (no pattern) are not run: the demo does not wait for a schedule.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.aws import LocalAccount
from sandbox.cloudformation import DeployedStack


@dataclass(frozen=True)
class Subscription:
    stack: str
    rule: str  # the rule's name in the local AWS (its physical id)
    function: str  # the target's logical id in the stack
    queue_url: str


@dataclass
class Delivery:
    subscription: Subscription
    event: dict
    result: Any = None
    error: Exception | None = None


def _target_function(arn: Any) -> str | None:
    """Logical id of the function a target's {"Fn::GetAtt": [id, "Arn"]} names (or None for other targets)."""
    if isinstance(arn, dict) and "Fn::GetAtt" in arn and arn["Fn::GetAtt"][1] == "Arn":
        return arn["Fn::GetAtt"][0]
    return None


@dataclass
class LocalEventBridge:
    account: LocalAccount
    invoke: Callable[[str, str, dict], Any]  # (stack name, function logical id, event) -> result
    subscriptions: list[Subscription] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    def subscribe(self, stack: DeployedStack) -> list[Subscription]:
        """Tap every pattern rule of `stack` that targets one of its Lambda functions (scheduled rules do not run)."""
        sqs, events = self.account.client("sqs"), self.account.client("events")
        added = []
        resources = stack.template.get("Resources", {})
        for logical, resource in resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] != "AWS::Events::Rule" or logical not in stack.physical_ids:
                continue
            rule, bus = stack.physical_ids[logical], props.get("EventBusName", "default")
            if isinstance(bus, dict):  # a Ref to the stack's own bus
                bus = stack.physical_ids[bus["Ref"]]
            for target in props.get("Targets", []):
                function = _target_function(target.get("Arn"))
                if resources.get(function, {}).get("Type") != "AWS::Lambda::Function":
                    continue
                # moto refuses to deliver to Lambda targets (and would match a scheduled rule to every event):
                # the target goes; for a pattern rule, the same target id now names a queue that pump() drains.
                events.remove_targets(Rule=rule, EventBusName=bus, Ids=[target["Id"]])
                if "EventPattern" not in props or function not in stack.functions:
                    continue
                name = f"tap-{len(self.subscriptions) + len(added)}-{function}"[:80]
                url = sqs.create_queue(QueueName=name)["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": target["Id"], "Arn": arn}])
                added.append(Subscription(stack.name, rule, function, url))
        self.subscriptions.extend(added)
        return added

    def put(self, event: dict) -> None:
        """Put an event on the default bus, as the AWS service named in its `source` would."""
        entry = {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event["detail"]),
            "Resources": event.get("resources", []),
        }
        failed = self.account.client("events").put_events(Entries=[entry])
        if failed.get("FailedEntryCount"):
            raise RuntimeError(f"PutEvents refused {event['source']}/{event['detail-type']}: {failed['Entries']}")

    def pump(self) -> list[Delivery]:
        """Deliver every matched event to its function once (errors are recorded, not retried)."""
        sqs = self.account.client("sqs")
        delivered = []
        for subscription in self.subscriptions:
            while batch := sqs.receive_message(QueueUrl=subscription.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            ):
                for message in batch:
                    sqs.delete_message(QueueUrl=subscription.queue_url, ReceiptHandle=message["ReceiptHandle"])
                    delivery = Delivery(subscription, json.loads(message["Body"]))
                    try:
                        delivery.result = self.invoke(subscription.stack, subscription.function, delivery.event)
                    except Exception as error:
                        delivery.error = error
                    delivered.append(delivery)
        self.deliveries.extend(delivered)
        return delivered
