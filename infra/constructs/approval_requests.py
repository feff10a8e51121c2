"""Approval requests of one environment, for every model: an event -> the request-approval Lambda -> e-mails with
signed links to each model's approvers.

In the first environment of the chain the events are the registry's (a new version of any model's group, pending
approval); in later ones they are promotion requests on a bus of ModelGate's own (`promotion_bus_name`), put there
by the previous environment's post-inference Lambda or by `modelgate request-promotion`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import ConfigError
from infra.constructs.event_bus_statement import EventBusStatement
from infra.constructs.modelgate_function import ModelGateFunction
from modelgate.approval import events as approval_events

# EventBridge's limits on a rule: its event pattern (2,048 characters by default; a quota raises it to 4,096) and
# its description (512 characters), which CloudFormation refuses at deploy.
EVENT_PATTERN_LIMIT = 2048
RULE_DESCRIPTION_LIMIT = 512


def described(groups: Sequence[str], limit: int = 300) -> str:
    """The groups for a rule's description: their names while short enough, else their number."""
    listed = ", ".join(groups)
    return listed if len(listed) <= limit else f"{len(groups)} model groups"


def pattern_size(*, groups: Sequence[str]) -> int:
    """Characters of the registry rule's pattern (the same JSON as the template's, compact)."""
    return len(
        json.dumps(
            {
                "detail": {"ModelApprovalStatus": ["PendingManualApproval"], "ModelPackageGroupName": list(groups)},
                "detail-type": [approval_events.REGISTRY_DETAIL_TYPE],
                "source": [approval_events.REGISTRY_SOURCE],
            },
            separators=(",", ":"),
        )
    )


def check_pattern_size(rule: str, groups: Sequence[str], size: int) -> None:
    if size > EVENT_PATTERN_LIMIT:
        raise ConfigError(
            f"models: {rule} names every model group ({len(groups)}) in its event pattern: {size} characters, over "
            f"EventBridge's {EVENT_PATTERN_LIMIT}. Shorten model_package_group names, or split the models over two "
            "projects (project.name); an account can also ask for the 4,096-character quota (then raise "
            "EVENT_PATTERN_LIMIT)."
        )


def route(
    scope: Construct,
    construct_id: str,
    pattern: events.EventPattern,
    function: ModelGateFunction,
    what: str,
    dead_letters: sqs.IQueue,
    bus: events.IEventBus | None = None,
) -> events.Rule:
    """An EventBridge rule to an asynchronously invoked function; undeliverable events go to `dead_letters`."""
    if len(what) > RULE_DESCRIPTION_LIMIT:
        raise ValueError(f"{construct_id}: rule description over {RULE_DESCRIPTION_LIMIT} characters: {what[:80]}...")
    return events.Rule(
        scope,
        construct_id,
        description=what,
        event_bus=bus,  # None: the account's default bus (AWS service events)
        event_pattern=pattern,
        targets=[
            targets.LambdaFunction(
                function.function,
                dead_letter_queue=dead_letters,  # delivery failures (throttling, permissions)
                retry_attempts=8,
                max_event_age=Duration.hours(6),
            )
        ],
    )


class ApprovalRequests(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: str,
        environment: str,
        receives_versions: bool,
        packages_arns: Sequence[str],
        groups: Sequence[str],
        registry: tuple[str, str],
        previous_account: str | None,
        environ: dict[str, str],
        files: Mapping[str, str],  # the functions' settings files (ApprovalSettings.bundled_files)
        layer: lambda_.ILayerVersion,
        failures: sqs.IQueue,
    ) -> None:
        """`receives_versions`: the first environment of the chain (registry events), else promotion requests.
        `packages_arns`: every model's versions (`Topology.packages_arn`); `registry`: (account, region)."""
        super().__init__(scope, construct_id)
        # The function is this construct's default child ("Default" is left out of logical ids), so its
        # resources keep the logical ids they had as the stack's own "RequestApproval" function.
        self.function = ModelGateFunction(
            self,
            "Default",
            handler="lambdas.request_approval.handler",
            description=f"ModelGate: e-mail approval links ({environment})",
            environment=environ,
            files=files,
            layer=layer,
            timeout_seconds=60,
            on_failure=failures,
        )
        role = self.function.role
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["sagemaker:DescribeModelPackage"], resources=list(packages_arns))
        )
        self.promotion_bus: events.EventBus | None = None
        if receives_versions:
            registry_account, registry_region = registry
            # Separation of duties: who really started the run that registered a version (CreatedBy of the
            # pipeline execution), recorded on the version (modelgate.approval.registrant).
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["sagemaker:DescribePipelineExecution"],
                    resources=[f"arn:aws:sagemaker:{registry_region}:{registry_account}:pipeline/*/execution/*"],
                )
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=["sagemaker:UpdateModelPackage"], resources=list(packages_arns))
            )
            pattern = events.EventPattern(
                source=[approval_events.REGISTRY_SOURCE],
                detail_type=[approval_events.REGISTRY_DETAIL_TYPE],
                detail={"ModelPackageGroupName": list(groups), "ModelApprovalStatus": ["PendingManualApproval"]},
            )
            check_pattern_size("the registry rule", groups, pattern_size(groups=groups))
        else:
            self.promotion_bus = self._promotion_bus(project, environment, previous_account)
            # Versions of the platform's registry: one prefix, whatever the number of models (a prefix per group
            # outgrew EventBridge's 2,048-character pattern at about 20 models). Only ModelGate puts events on
            # this bus; the function refuses a group it does not serve (UnknownModelGroupError -> alarmed queue).
            registry_account, registry_region = registry
            packages = f"arn:aws:sagemaker:{registry_region}:{registry_account}:model-package/"
            pattern = events.EventPattern(
                source=[approval_events.PROMOTION_SOURCE],
                detail_type=[approval_events.PROMOTION_DETAIL_TYPE],
                detail={"target_environment": [environment], "model_package_arn": [{"prefix": packages}]},
            )
        route(
            self,
            "Requested",
            pattern,
            self.function,
            f"Approval requests for {described(groups)} in {environment} -> approval e-mails",
            dead_letters=failures,
            bus=self.promotion_bus,
        )

    def _promotion_bus(self, project: str, environment: str, previous_account: str | None) -> events.EventBus:
        """Promotion requests arrive on a bus of ModelGate's own: on the default bus any principal of the account
        with events:PutEvents could forge them (spam to approvers, fake run metrics on the page). Its policy
        denies every principal not tagged PROMOTER_TAG = project (ModelGate's post-inference roles; operators
        tag the roles allowed to run `modelgate request-promotion`), and admits the previous environment's
        account for requests of source modelgate.promotion.

        Named resources (the bus, its statements) are created in the stack itself: under a new logical id
        CloudFormation would create a second bus of the same name, which fails."""
        stack = Stack.of(self)
        name = approval_events.promotion_bus_name(project, environment)
        bus = events.EventBus(stack, "PromotionBus", event_bus_name=name)
        EventBusStatement(
            stack,
            "OnlyModelGatePromoters",
            event_bus_name=bus.event_bus_name,
            statement_id="modelgate-promoters-only",
            statement={
                "Effect": "Deny",
                "Principal": "*",
                "Action": "events:PutEvents",
                "Resource": bus.event_bus_arn,
                "Condition": {"StringNotEquals": {f"aws:PrincipalTag/{approval_events.PROMOTER_TAG}": project}},
            },
        )
        if previous_account is None or previous_account == stack.account:
            return bus  # same account: identity policies grant it (and the Deny above still applies)
        EventBusStatement(
            stack,
            "PromotionRequestsFromPreviousEnvironment",
            event_bus_name=bus.event_bus_name,
            statement_id=f"modelgate-promotion-from-{previous_account}",
            statement={
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{previous_account}:root"},
                "Action": "events:PutEvents",
                "Resource": bus.event_bus_arn,
                "Condition": {"StringEquals": {"events:source": approval_events.PROMOTION_SOURCE}},
            },
        )
        return bus
