"""`modelgate pipeline start|watch`: a data scientist starts a run of the deployed pipeline and follows its
steps, without looking up names in the console."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from infra.config import load_config
from modelgate.cli import EXIT_AWS, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main, watch_execution
from modelgate.parameters import pipeline_name

REGION = "eu-west-1"


FIRST = load_config().chain.first  # the shipped config's first environment
MANY = "config/examples/many-models.yaml"


def create_pipeline(sagemaker, name: str) -> None:
    definition = {"Version": "2020-12-01", "Parameters": [{"Name": "RegisteredBy", "Type": "String"}], "Steps": []}
    sagemaker.create_pipeline(
        PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn="arn:aws:iam::123456789012:role/execution"
    )


@pytest.fixture
def deployed_pipeline():
    """The model's pipeline in the first environment, named as the pipeline stack names it (in moto)."""
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        create_pipeline(sagemaker, pipeline_name("modelgate", "energy-forecast", FIRST))
        yield sagemaker


def test_start_finds_the_models_pipeline_by_name_and_passes_the_parameters(deployed_pipeline, capsys):
    code = main(
        ["pipeline", "start", "--env", FIRST, "--registered-by", "me@example.com", "--param", "MetricThreshold=0.9"]
    )
    assert code == EXIT_OK
    out = capsys.readouterr().out
    name = pipeline_name("modelgate", "energy-forecast", FIRST)
    assert out.startswith(f"started {name}: arn:aws:sagemaker:eu-west-1:")
    assert "modelgate pipeline watch arn:aws:sagemaker" in out
    (execution,) = deployed_pipeline.list_pipeline_executions(PipelineName=name)["PipelineExecutionSummaries"]
    parameters = deployed_pipeline.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution["PipelineExecutionArn"]
    )["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in parameters} == {"RegisteredBy": "me@example.com", "MetricThreshold": "0.9"}


def test_start_without_a_deployed_pipeline_says_so(deployed_pipeline, capsys):
    later = load_config().chain.next(FIRST)
    assert main(["pipeline", "start", "--env", later, "--registered-by", "me@example.com"]) == EXIT_AWS
    name = pipeline_name("modelgate", "energy-forecast", later)
    assert f"cannot find the {later} pipeline of energy-forecast: pipeline {name} does not exist" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as exit_:
        main(["pipeline", "start", "--env", FIRST])  # whose version would it be?
    assert exit_.value.code == 2


def test_with_several_models_start_needs_model_and_runs_that_models_pipeline(capsys):
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        first = load_config(MANY).chain.first
        for model in ("energy-forecast", "churn"):
            create_pipeline(sagemaker, pipeline_name("modelgate", model, first))
        start = ["pipeline", "start", "--config", MANY, "--env", first, "--registered-by", "me@example.com"]
        assert main(start) == EXIT_USAGE
        err = capsys.readouterr().err
        assert "configures several models; say which with --model" in err
        assert "energy-forecast (group energy-forecast), churn (group churn-scores)" in err
        assert main([*start, "--model", "churn-scores"]) == EXIT_OK  # by group or by name
        churn = pipeline_name("modelgate", "churn", first)
        assert capsys.readouterr().out.startswith(f"started {churn}: ")
        assert len(sagemaker.list_pipeline_executions(PipelineName=churn)["PipelineExecutionSummaries"]) == 1
        energy = pipeline_name("modelgate", "energy-forecast", first)
        assert sagemaker.list_pipeline_executions(PipelineName=energy)["PipelineExecutionSummaries"] == []


def stubbed_run(final: str, failure: str = "") -> tuple[object, Stubber, str]:
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/p/execution/e1"
    request = {"PipelineExecutionArn": arn, "SortOrder": "Ascending"}
    rounds = [
        ([("Prep", "Executing")], "Executing"),
        ([("Prep", "Succeeded"), ("Train", "Executing")], "Executing"),
        ([("Prep", "Succeeded"), ("Train", "Succeeded"), ("Evaluate", final)], final),
    ]
    for steps, status in rounds:
        listed = [{"StepName": name, "StepStatus": state} for name, state in steps]
        if failure and status == final:
            listed[-1]["FailureReason"] = failure
        stub.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": listed}, request)
        described = {"PipelineExecutionArn": arn, "PipelineExecutionStatus": status}
        if failure and status == final:
            described["FailureReason"] = failure
        stub.add_response("describe_pipeline_execution", described, {"PipelineExecutionArn": arn})
    return client, stub, arn


@pytest.mark.parametrize(("final", "code"), [("Succeeded", EXIT_OK), ("Failed", EXIT_NOT_FOUND)])
def test_watch_prints_each_step_change_once_and_exits_by_the_outcome(final, code):
    client, stub, arn = stubbed_run(final, "MAPE ratio 1.2 above 1.0" if final == "Failed" else "")
    out, waits = io.StringIO(), []
    with stub:
        assert watch_execution(client, arn, poll_seconds=7, sleep=waits.append, out=out) == code
    stub.assert_no_pending_responses()
    lines = out.getvalue().splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["Prep", "Executing"], ["Prep", "Succeeded"], ["Train", "Executing"], ["Train", "Succeeded"],
        ["Evaluate", final],
    ]  # fmt: skip
    assert lines[-1].startswith(f"execution {final}")
    assert waits == [7, 7], "polls until the run ends, no longer"
