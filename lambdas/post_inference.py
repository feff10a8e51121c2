"""Post-inference Lambda (EventBridge, async): a batch-inference run finished in this environment -> collect its
metrics and ask the next environment's approvers to promote the model version (event on that environment's bus).
"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger

from modelgate.approval.events import parse_inference_event
from modelgate.approval.model_versions import ForeignModelPackage, group_of
from modelgate.approval.promotion import promote_after_inference
from modelgate.approval.services import Services

logger = Logger(service="modelgate-post-inference")


services = cache(Services.from_environ)  # once per container


def handle(event: dict, services: Services) -> dict:
    run = parse_inference_event(event, services.settings.chain)
    if run is None:
        logger.info("run did not complete: nothing to promote", extra={"event_id": event.get("id")})
        return {"requested": False, "note": "run did not complete"}
    logger.append_keys(run=run.run_id)
    if run.model_package_arn:
        logger.append_keys(model_package_group=group_of(services.settings, run.model_package_arn))
    try:
        outcome = promote_after_inference(run, services)
    except ForeignModelPackage as foreign:
        # Not ours (a group not configured, another registry): dropped and logged; raising would retry it into
        # the alarmed queue.
        logger.info(
            "ignored: not a version of a model package group this platform serves", extra={"detail": str(foreign)}
        )
        return {"requested": False, "note": str(foreign), "ignored": True}
    logger.info(outcome.note, extra={"requested": outcome.requested is not None})
    return {"requested": outcome.requested is not None, "note": outcome.note}


@logger.inject_lambda_context(clear_state=True)  # no keys leak between invocations
def handler(event: dict, context: object) -> dict:
    bundle = services()
    logger.append_keys(**bundle.settings.log_keys())
    return handle(event, bundle)
