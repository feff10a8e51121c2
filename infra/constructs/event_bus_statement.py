"""One statement of an event bus's resource policy (AWS::Events::EventBusPolicy), given as an IAM statement."""

from __future__ import annotations

from aws_cdk import aws_events as events
from constructs import Construct


class EventBusStatement(events.CfnEventBusPolicy):
    """The L1 with only `statement`: its `principal` / `action` / `condition` properties are deprecated.

    cdk-nag's EVB1 rule (open event bus) still reads the deprecated `principal` getter of every event bus policy,
    which makes jsii print a deprecation warning on each synth. This class cannot set `principal`, so it answers
    that getter from Python (None, what the L1 holds) and EVB1 checks `statement` as before.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, event_bus_name: str, statement_id: str, statement: dict
    ) -> None:
        super().__init__(
            scope, construct_id, event_bus_name=event_bus_name, statement_id=statement_id, statement=statement
        )

    @property
    def principal(self) -> None:
        return None
