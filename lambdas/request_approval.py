"""Request-approval Lambda (EventBridge, async): a new model version (registry event, the chain's first environment)
or a promotion request (later environments) -> one e-mail per approver of THAT model (any configured group) with
their own signed approve/reject links.

Idempotent per (request, recipient): EventBridge retries and duplicate events send nothing more. Errors
propagate, so Lambda retries and finally the on-failure destination (SQS, alarmed) keeps the event.
The event is parsed by modelgate.approval.events (typed, with clear errors), not Powertools' event classes,
whose import alone costs ~20 ms of every cold start.
"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger

from modelgate.approval.events import parse_request_event
from modelgate.approval.model_versions import ForeignModelPackage, group_of
from modelgate.approval.request_emails import request_approval
from modelgate.approval.services import Services

logger = Logger(service="modelgate-request-approval")


services = cache(Services.from_environ)  # once per container


def handle(event: dict, services: Services) -> dict:
    request = parse_request_event(event, services.settings.chain)
    logger.append_keys(
        model_package_group=group_of(services.settings, request.model_package_arn),
        model_package_arn=request.model_package_arn,
        request_id=request.request_id,
    )
    logger.info("approval requested", extra={"event_id": event.get("id"), "source": event.get("source")})
    try:
        outcome = request_approval(request, services)
    except ForeignModelPackage as foreign:
        # Not ours (a group not configured, another registry): dropped and logged; raising would retry it into
        # the alarmed queue.
        logger.info(
            "ignored: not a version of a model package group this platform serves", extra={"detail": str(foreign)}
        )
        return {"sent": [], "already_sent": [], "note": str(foreign), "ignored": True}
    logger.info(
        "request handled",
        extra={
            "sent": outcome.sent,
            "already_sent": outcome.already_sent,
            "not_requested": outcome.not_requested,
            "not_mailed": outcome.not_mailed,
        },
    )
    return {
        "sent": list(outcome.sent),
        "already_sent": list(outcome.already_sent),
        "not_mailed": list(outcome.not_mailed),
        "note": outcome.not_requested,
    }


@logger.inject_lambda_context(clear_state=True)  # no keys leak between invocations
def handler(event: dict, context: object) -> dict:
    bundle = services()
    logger.append_keys(**bundle.settings.log_keys())
    return handle(event, bundle)
