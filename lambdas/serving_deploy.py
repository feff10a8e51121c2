"""Serving deploy step of ONE model group in one environment (EventBridge, async): the group's approved-model
parameter changed (or the daily reconciliation ran, or someone invoked it by hand) -> the group's endpoint
prefix holds exactly that version. Each group has its own function (infra/constructs/model_deployment.py),
so an approval of one group can never touch another group's endpoint: its role may not even write there.

Events it accepts, anything else is refused without touching S3:
- `Parameter Store Change` (source aws.ssm) for this group's approved-model parameter of this environment;
- `Scheduled Event` (source aws.events): reconciliation, repairs drift;
- `{"action": "deploy"}` or `{"action": "deploy", "group": "<this group>"}`: a manual run (`aws lambda invoke`,
  the demo); another group's name is refused, naming the group this function deploys.
Runs of one group never overlap: each holds the group's DynamoDB lease (modelgate/serving/deploy_lock.py).
Errors propagate: Lambda retries, then the failure queue (alarmed) keeps the event.
"""

from __future__ import annotations

import uuid
from functools import cache

import boto3
from aws_lambda_powertools import Logger

from modelgate.serving.deploy import ServingTarget, deploy_approved
from modelgate.serving.deploy_lock import DeployLock
from modelgate.serving.settings import DeploySettings

logger = Logger(service="modelgate-serving-deploy")


class UnexpectedEvent(ValueError):
    pass


def trigger(event: object, parameter_name: str, group: str) -> str:
    """What asked for this deployment; UnexpectedEvent for anything this function must not act on."""
    if not isinstance(event, dict):
        raise UnexpectedEvent(f"expected an object, got {type(event).__name__}")
    if event.get("action") == "deploy" and set(event) <= {"action", "reason", "group"}:
        if event.get("group", group) != group:
            raise UnexpectedEvent(
                f"this function deploys model group {group!r}, not {event.get('group')!r}: invoke that group's "
                "deploy function (one per model group, in its Serving-<model> stack)"
            )
        return f"manual: {event.get('reason') or 'no reason given'}"
    source, kind, detail = event.get("source"), event.get("detail-type"), event.get("detail")
    if source == "aws.ssm" and kind == "Parameter Store Change" and isinstance(detail, dict):
        if detail.get("name") != parameter_name:
            raise UnexpectedEvent(f"change of {detail.get('name')!r}, this step serves {parameter_name!r}")
        return f"parameter {detail.get('operation', 'change')}"
    if source == "aws.events" and kind == "Scheduled Event":
        return "scheduled reconciliation"
    raise UnexpectedEvent(f"not a deploy trigger: source={source!r} detail-type={kind!r}")


@cache
def clients() -> tuple[DeploySettings, object, object, object]:
    session = boto3.Session()
    return DeploySettings.from_environ(), session.client("ssm"), session.client("s3"), session.client("dynamodb")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context: object) -> dict:
    settings, ssm, s3, dynamodb = clients()
    logger.append_keys(model_package_group=settings.model_package_group, environment=settings.environment)
    reason = trigger(event, settings.parameter_name, settings.model_package_group)
    target = ServingTarget(settings.bucket, settings.parameter_name, settings.model_package_group, settings.environment)
    lease = f"{settings.bucket}/{target.prefix}"  # one group's endpoint prefix: other groups deploy alongside
    lock = DeployLock(settings.lock_table, lease, settings.lease_seconds)
    remaining = getattr(context, "get_remaining_time_in_millis", lambda: settings.lease_seconds * 1000)
    owner = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
    with lock.held(dynamodb, owner, seconds_left=lambda: remaining() / 1000):
        report = deploy_approved(ssm=ssm, s3=s3, target=target)
    logger.append_keys(model_version=report.deployment.model_version)
    logger.info("serving deployed", extra={"trigger": reason, **report.summary()})
    return report.summary()
