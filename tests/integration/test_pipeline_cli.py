"""`modelgate pipeline start|watch`: a data scientist starts a run of the deployed pipeline and follows its
steps, without looking up names in the console."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from modelgate.cli import EXIT_AWS, EXIT_NOT_FOUND, EXIT_OK, main, watch_execution

REGION = "eu-west-1"


@pytest.fixture
def deployed_pipeline():
    """A pipeline and the Pipeline stack's PipelineName output, as `cdk deploy` leaves them (in moto)."""
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        definition = {"Version": "2020-12-01", "Parameters": [{"Name": "RegisteredBy", "Type": "String"}], "Steps": []}
        sagemaker.create_pipeline(
            PipelineName="modelgate-dev-training-abc123",
            PipelineDefinition=json.dumps(definition),
            RoleArn="arn:aws:iam::123456789012:role/execution",
        )
        template = {
            "Resources": {
                "M": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "/m", "Type": "String", "Value": "x"}}
            },
            "Outputs": {"PipelineName": {"Value": "modelgate-dev-training-abc123"}},
        }
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="modelgate-dev-Pipeline", TemplateBody=json.dumps(template)
        )
        yield sagemaker


def test_start_finds_the_pipeline_from_its_stack_and_passes_the_parameters(deployed_pipeline, capsys):
    code = main(["pipeline", "start", "--env", "dev", "--registered-by", "me@example.com", "--param", "Epochs=20"])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("started modelgate-dev-training-abc123: arn:aws:sagemaker:eu-west-1:")
    assert "modelgate pipeline watch arn:aws:sagemaker" in out
    (execution,) = deployed_pipeline.list_pipeline_executions(PipelineName="modelgate-dev-training-abc123")[
        "PipelineExecutionSummaries"
    ]
    parameters = deployed_pipeline.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution["PipelineExecutionArn"]
    )["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in parameters} == {"RegisteredBy": "me@example.com", "Epochs": "20"}


def test_start_without_a_deployed_stack_says_so(deployed_pipeline, capsys):
    assert main(["pipeline", "start", "--env", "test", "--registered-by", "me@example.com"]) == EXIT_AWS
    assert "cannot find the test pipeline: stack modelgate-test-Pipeline" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["pipeline", "start", "--env", "dev"])  # whose version would it be?
    assert exit_.value.code == 2


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
