"""The Glue prep engine's callback logic (modelgate/glue_prep.py) against moto's Glue and a stubbed SageMaker
client (moto has no SendPipelineExecutionStep*; botocore's Stubber checks every request against the API model)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from modelgate import glue_prep

JOB = "modelgate-prep"
TOKEN = "callback-token-123"
ARGUMENTS = {
    "input_uri": "s3://raw/readings/",
    "curated_uri": "s3://curated/exec-1/curated",
    "quarantine_uri": "s3://curated/exec-1/quarantine",
    "report_uri": "s3://artifacts/exec-1/prep/prep_report.json",
}
EXECUTION = "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/p/execution/exec-1"


def message(**overrides) -> str:
    body = {"token": TOKEN, "pipelineExecutionArn": EXECUTION, "arguments": ARGUMENTS, "status": "Executing"}
    body.update(overrides)
    return json.dumps(body)


@pytest.fixture
def glue():
    with mock_aws():
        client = boto3.client("glue", region_name="eu-west-1")
        client.create_job(Name=JOB, Role="arn:aws:iam::123456789012:role/glue", Command={"Name": "glueetl"})
        yield client


@pytest.fixture
def sagemaker():
    client = boto3.client("sagemaker", region_name="eu-west-1")
    with Stubber(client) as stubber:
        client.stubber = stubber
        yield client
        stubber.assert_no_pending_responses()


def test_start_runs_the_job_with_the_token_and_the_pipeline_uris(glue, sagemaker):
    outcome = glue_prep.start_prep(message(), glue=glue, sagemaker=sagemaker, job_name=JOB)
    assert outcome.action == "started"
    run = glue.get_job_run(JobName=JOB, RunId=outcome.job_run_id)["JobRun"]
    assert run["Arguments"] == {
        "--input_uri": ARGUMENTS["input_uri"],
        "--curated_uri": ARGUMENTS["curated_uri"],
        "--quarantine_uri": ARGUMENTS["quarantine_uri"],
        "--report_uri": ARGUMENTS["report_uri"],
        "--callback_token": TOKEN,
        "--pipeline_execution_arn": EXECUTION,
    }


def test_a_redelivered_message_does_not_start_a_second_run(glue, sagemaker):
    first = glue_prep.start_prep(message(), glue=glue, sagemaker=sagemaker, job_name=JOB)
    again = glue_prep.start_prep(message(), glue=glue, sagemaker=sagemaker, job_name=JOB)
    assert again == glue_prep.Outcome("already-started", job_run_id=first.job_run_id)
    assert len(glue.get_job_runs(JobName=JOB)["JobRuns"]) == 1
    other = glue_prep.start_prep(message(token="another"), glue=glue, sagemaker=sagemaker, job_name=JOB)
    assert other.action == "started"
    assert other.job_run_id != first.job_run_id


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({k: v for k, v in ARGUMENTS.items() if k != "curated_uri"}, "missing argument 'curated_uri'"),
        ({**ARGUMENTS, "input_uri": "/local/path"}, "argument 'input_uri' must be an s3:// URI"),
        ({**ARGUMENTS, "extra": "s3://x/y"}, "unknown arguments ['extra']"),
    ],
)
def test_bad_arguments_fail_the_pipeline_step_with_the_reason_and_start_nothing(glue, sagemaker, arguments, reason):
    sagemaker.stubber.add_response(
        "send_pipeline_execution_step_failure",
        {},
        {"CallbackToken": TOKEN, "FailureReason": ANY},
    )
    outcome = glue_prep.start_prep(message(arguments=arguments), glue=glue, sagemaker=sagemaker, job_name=JOB)
    assert outcome.action == "rejected"
    assert reason in outcome.detail
    assert glue.get_job_runs(JobName=JOB)["JobRuns"] == []


def test_unknown_job_fails_the_step_at_once(glue, sagemaker):
    sagemaker.stubber.add_response(
        "send_pipeline_execution_step_failure", {}, {"CallbackToken": TOKEN, "FailureReason": ANY}
    )
    outcome = glue_prep.start_prep(message(), glue=glue, sagemaker=sagemaker, job_name="no-such-job")
    assert outcome.action == "rejected"
    assert "EntityNotFoundException" in outcome.detail


@pytest.mark.parametrize(
    "body",
    ["not json", "[1, 2]", json.dumps({"arguments": ARGUMENTS}), json.dumps({"token": ""})],
)
def test_messages_without_a_token_raise_so_that_they_end_in_the_dead_letter_queue(glue, sagemaker, body):
    with pytest.raises(glue_prep.MalformedMessageError):
        glue_prep.start_prep(body, glue=glue, sagemaker=sagemaker, job_name=JOB)
    assert glue.get_job_runs(JobName=JOB)["JobRuns"] == []


def started_run(glue, sagemaker) -> str:
    return glue_prep.start_prep(message(), glue=glue, sagemaker=sagemaker, job_name=JOB).job_run_id


def test_success_answers_the_step_with_the_curated_uri(glue, sagemaker):
    run_id = started_run(glue, sagemaker)
    sagemaker.stubber.add_response(
        "send_pipeline_execution_step_success",
        {},
        {
            "CallbackToken": TOKEN,
            "OutputParameters": [
                {"Name": "curated_uri", "Value": ARGUMENTS["curated_uri"]},
                {"Name": "job_run_id", "Value": run_id},
            ],
        },
    )
    detail = {"jobName": JOB, "state": "SUCCEEDED", "jobRunId": run_id}
    assert glue_prep.finish_prep(detail, glue=glue, sagemaker=sagemaker, job_name=JOB).action == "succeeded"


@pytest.mark.parametrize("state", ["FAILED", "TIMEOUT", "STOPPED", "ERROR"])
def test_a_failed_run_fails_the_step_saying_how(glue, sagemaker, state):
    run_id = started_run(glue, sagemaker)
    sagemaker.stubber.add_response(
        "send_pipeline_execution_step_failure",
        {},
        {"CallbackToken": TOKEN, "FailureReason": f"Glue job run {run_id} ended {state}: out of memory"},
    )
    detail = {"jobName": JOB, "state": state, "jobRunId": run_id, "message": "out of memory"}
    assert glue_prep.finish_prep(detail, glue=glue, sagemaker=sagemaker, job_name=JOB).action == "failed"


def test_a_redelivered_event_is_reported_not_raised(glue, sagemaker):
    run_id = started_run(glue, sagemaker)
    sagemaker.stubber.add_client_error(
        "send_pipeline_execution_step_success",
        service_error_code="ValidationException",
        service_message="Step has already completed",
    )
    detail = {"jobName": JOB, "state": "SUCCEEDED", "jobRunId": run_id}
    outcome = glue_prep.finish_prep(detail, glue=glue, sagemaker=sagemaker, job_name=JOB)
    assert outcome.action == "already-answered"


def test_throttling_while_answering_is_raised_for_a_retry(glue, sagemaker):
    run_id = started_run(glue, sagemaker)
    sagemaker.stubber.add_client_error("send_pipeline_execution_step_success", service_error_code="ThrottlingException")
    with pytest.raises(sagemaker.exceptions.ClientError):
        glue_prep.finish_prep(
            {"jobName": JOB, "state": "SUCCEEDED", "jobRunId": run_id}, glue=glue, sagemaker=sagemaker, job_name=JOB
        )


@pytest.mark.parametrize(
    "detail",
    [
        {"jobName": "someone-elses-job", "state": "SUCCEEDED", "jobRunId": "jr_1"},
        {"jobName": JOB, "state": "RUNNING", "jobRunId": "jr_1"},
        {"jobName": JOB, "state": "SUCCEEDED"},
    ],
)
def test_events_that_do_not_end_a_pipeline_run_are_ignored(glue, sagemaker, detail):
    assert glue_prep.finish_prep(detail, glue=glue, sagemaker=sagemaker, job_name=JOB).action == "ignored"


def test_a_run_started_by_hand_is_ignored(glue, sagemaker):
    run_id = glue.start_job_run(JobName=JOB, Arguments={"--input_uri": "s3://raw/x"})["JobRunId"]
    detail = {"jobName": JOB, "state": "SUCCEEDED", "jobRunId": run_id}
    outcome = glue_prep.finish_prep(detail, glue=glue, sagemaker=sagemaker, job_name=JOB)
    assert outcome.action == "ignored"
    assert "no callback token" in outcome.detail
