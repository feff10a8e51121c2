"""EventBridge (Glue Job State Change) -> answer the pipeline's CallbackStep. Logic: modelgate.glue_prep.finish_prep."""

from __future__ import annotations

import os

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source

from modelgate.glue_prep import finish_prep

logger = Logger(service="modelgate-glue-prep")
glue = boto3.client("glue")
sagemaker = boto3.client("sagemaker")
JOB_NAME = os.environ["GLUE_JOB_NAME"]


@logger.inject_lambda_context
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context) -> dict:
    # Errors propagate: Lambda retries the asynchronous invocation, then sends it to the function's DLQ.
    outcome = finish_prep(dict(event.detail), glue=glue, sagemaker=sagemaker, job_name=JOB_NAME)
    logger.info(
        "glue job state change",
        extra={"action": outcome.action, "job_run_id": outcome.job_run_id, "detail": outcome.detail},
    )
    return {"action": outcome.action, "job_run_id": outcome.job_run_id}
