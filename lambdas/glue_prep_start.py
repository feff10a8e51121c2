"""SQS (CallbackStep requests) -> start the Glue prep job run. Logic: modelgate.glue_prep.start_prep."""

from __future__ import annotations

import os

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from modelgate.glue_prep import start_prep

logger = Logger(service="modelgate-glue-prep")
processor = BatchProcessor(event_type=EventType.SQS)
glue = boto3.client("glue")
sagemaker = boto3.client("sagemaker")
JOB_NAME = os.environ["GLUE_JOB_NAME"]


def record_handler(record: SQSRecord) -> None:
    # A raised error marks only this message as failed: SQS retries it, then moves it to the DLQ.
    outcome = start_prep(record.body, glue=glue, sagemaker=sagemaker, job_name=JOB_NAME)
    logger.info(
        "glue prep request",
        extra={
            "action": outcome.action,
            "job_run_id": outcome.job_run_id,
            "detail": outcome.detail,
            "message_id": record.message_id,
        },
    )


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
