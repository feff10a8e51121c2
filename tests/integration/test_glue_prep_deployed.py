"""The Glue prep engine's functions as deployed: the test stage (prep.engine: glue) deployed into the local AWS
stand-in, the real handlers run with exactly the environment the template gives them. Catches wiring mistakes
that calling modelgate.glue_prep directly cannot: handler paths, the job name variable, event shapes.
(moto implements no SendPipelineExecutionStep*: the answering path is tested in tests/unit/test_glue_prep.py.)"""

from __future__ import annotations

import json
import re

import pytest

from sandbox.aws import LocalAws
from sandbox.cloudformation import deploy_stage
from sandbox.deployed_functions import function_environ
from sandbox.lambda_runner import FunctionError, LocalFunction
from stacks.stage import pipeline_stack_id

TOKEN = "token-from-the-pipeline"


@pytest.fixture(scope="module")
def deployed(synth, config):
    env = config.environments["test"]
    assert env.prep.engine == "glue"
    with LocalAws(env.region) as aws:
        account = aws.account(env.account)
        stacks = deploy_stage(account, synth.outdir / f"assembly-{config.project.name}-test")
        yield account, stacks[pipeline_stack_id(config.models[0])]


def glue_job(pipeline) -> str:
    (name,) = [
        pid for logical, pid in pipeline.physical_ids.items() if re.fullmatch(r"GluePrepJob[0-9A-F]{8}", logical)
    ]
    return name


def sqs_event(body: str, region: str, account: str) -> dict:
    return {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r-1",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{region}:{account}:requests",
                "awsRegion": region,
            }
        ]
    }


def test_a_callback_message_starts_the_deployed_glue_job_once(deployed, tmp_path):
    account, pipeline = deployed
    start = pipeline.function("GluePrepStart")
    job = glue_job(pipeline)
    assert start.environment["GLUE_JOB_NAME"] == job
    arguments = {
        "input_uri": "s3://raw/readings/",
        "curated_uri": "s3://curated/e-1/curated",
        "quarantine_uri": "s3://curated/e-1/quarantine",
        "report_uri": "s3://artifacts/e-1/prep/prep_report.json",
    }
    body = json.dumps({"token": TOKEN, "pipelineExecutionArn": "arn:x", "arguments": arguments, "status": "Executing"})
    event = sqs_event(body, account.region, account.account)
    with LocalFunction(start.name, start.handler, function_environ(account, start), log=tmp_path / "s.log") as fn:
        assert fn.invoke(event) == {"batchItemFailures": []}
        assert fn.invoke(event) == {"batchItemFailures": []}, "a redelivered message is handled, not retried"
        (run,) = account.client("glue").get_job_runs(JobName=job)["JobRuns"]
        assert run["Arguments"]["--callback_token"] == TOKEN
        assert run["Arguments"]["--curated_uri"] == arguments["curated_uri"]
        # A message with no token cannot be answered: the invocation fails (every record of the batch did), so
        # SQS redelivers it until it lands in the dead-letter queue.
        with pytest.raises(FunctionError, match="MalformedMessageError"):
            fn.invoke(sqs_event("{}", account.region, account.account))


def test_the_deployed_finish_function_reads_glue_state_change_events(deployed, tmp_path):
    account, pipeline = deployed
    finish = pipeline.function("GluePrepFinish")
    job = glue_job(pipeline)
    run_id = account.client("glue").start_job_run(JobName=job, Arguments={"--input_uri": "s3://raw/x"})["JobRunId"]
    event = {
        "version": "0",
        "id": "e-1",
        "detail-type": "Glue Job State Change",
        "source": "aws.glue",
        "account": account.account,
        "time": "2026-11-22T00:00:00Z",
        "region": account.region,
        "resources": [],
        "detail": {"jobName": job, "severity": "INFO", "state": "SUCCEEDED", "jobRunId": run_id, "message": "ok"},
    }
    env = function_environ(account, finish)
    with LocalFunction(finish.name, finish.handler, env, log=tmp_path / "f.log") as fn:
        assert fn.invoke(event) == {"action": "ignored", "job_run_id": run_id}  # started by hand: no token
