"""The deployed entry points: handlers configured only by their environment variables, and the transform-job
trigger of the post-inference Lambda."""

from __future__ import annotations

import pytest

from lambdas import approval_api, post_inference, request_approval
from sandbox.api_gateway import LambdaContext
from sandbox.approval import ApproverBrowser
from tests.integration.approval.conftest import ACCOUNT, REGION

# The tests of one deployed world run together on one pytest-xdist worker (pyproject: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("approval-world-b")


@pytest.fixture
def deployed_env(world, monkeypatch):
    """`become(function)`: dev's function `function` as Lambda starts it, in the process environment (its
    template's variables, the local endpoint, its execution role's credentials); caches cleared around the test."""

    def become(function: str) -> None:
        for cached in (approval_api.runtime, request_approval.services, post_inference.services):
            cached.cache_clear()
        for name, value in world.world.function_environ("dev", "Approval", function).items():
            monkeypatch.setenv(name, value)

    yield become
    for cached in (approval_api.runtime, request_approval.services, post_inference.services):
        cached.cache_clear()


def test_handlers_build_their_clients_from_the_environment(world, deployed_env):
    arn = world.register()
    deployed_env("RequestApproval")
    result = request_approval.handler(world.registry_event(arn), LambdaContext(function_name="request-approval"))
    assert result["sent"] == list(world.envs["dev"].settings.model(world.group).approver_emails)
    (mail,) = world.emails()
    # The real handler (not the test's route) answers the link: a sign-in redirect for a browser without session.
    token = mail.links()["approve"].split("token=", 1)[1]
    event = {
        "resource": "/links/{action}",
        "httpMethod": "GET",
        "pathParameters": {"action": "approve"},
        "queryStringParameters": {"token": token},
        "headers": {},
    }
    deployed_env("ApprovalApi")
    response = approval_api.handler(event, LambdaContext(function_name="approval-api"))
    assert response["statusCode"] == 302
    assert response["headers"]["Location"].startswith(world.issuer.authorize_url)
    assert response["multiValueHeaders"]["Set-Cookie"][0].startswith("mg_signin=")
    bad = approval_api.handler({"nonsense": True}, LambdaContext())
    assert bad["statusCode"] == 400


def test_a_completed_transform_job_leads_to_a_promotion_request(world, deployed_env):
    arn = world.register()
    world.request("dev", world.registry_event(arn))
    browser = ApproverBrowser("alice")
    browser.submit(browser.open(world.emails()[-1].links()["approve"]))

    sagemaker, s3 = world.session.client("sagemaker"), world.session.client("s3")
    sagemaker.create_model(
        ModelName="forecast-v1",
        PrimaryContainer={"Image": "triton:local", "ModelPackageName": arn},
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
    )
    output = f"s3://{world.bucket}/batch/run-7/"
    s3.put_object(Bucket=world.bucket, Key="batch/run-7/metrics.json", Body=b'{"mape": {"value": 0.09}, "rows": 1200}')
    job = sagemaker.create_transform_job(
        TransformJobName="run-7",
        ModelName="forecast-v1",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{world.bucket}/in/"}}
        },
        TransformOutput={"S3OutputPath": output},
        TransformResources={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1},
        Tags=[{"Key": "team", "Value": "forecasting"}],  # no modelgate tag: found through the model instead
    )
    event = {
        "id": "e1",
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Transform Job State Change",
        "region": REGION,
        "detail": {
            "TransformJobName": "run-7",
            "TransformJobArn": job["TransformJobArn"],
            "TransformJobStatus": "Completed",
        },
    }
    deployed_env("PostInference")
    result = post_inference.handler(event, LambdaContext(function_name="post-inference"))
    assert result["requested"] is True, result
    (request,) = world.promotion_events()
    detail = request["detail"]
    assert detail["model_package_arn"] == arn, "found through the transform job's model"
    assert detail["target_environment"] == "test"
    assert detail["metrics"]["output"] == output
    assert detail["metrics"]["mape"] == "0.09"
    assert detail["metrics"]["instances"] == "1 x ml.g5.xlarge"


def test_an_unreachable_identity_provider_is_a_clear_503_not_a_crash(world):
    from modelgate.approval.settings import SignInSettings
    from modelgate.approval.signin import SigningKeys

    arn = world.register()
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    dev = world.envs["dev"]
    dead = SignInSettings(
        "http://127.0.0.1:9/", "http://127.0.0.1:9/jwks", "http://127.0.0.1:9/a", "http://127.0.0.1:9/t", "c"
    )
    runtime = approval_api.Runtime(dev.services, dead, SigningKeys(dead.jwks_url))
    token = mail.links()["approve"].split("token=", 1)[1]
    event = {
        "resource": "/links/{action}",
        "httpMethod": "GET",
        "pathParameters": {"action": "approve"},
        "queryStringParameters": {"token": token},
        "headers": {"cookie": "mg_session=eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.e30.c2ln"},
    }
    response = approval_api.route(runtime, event)
    assert response["statusCode"] == 503
    assert "Nothing was changed" in response["body"]


def test_get_and_head_show_the_page_post_decides_and_other_methods_are_405(world):
    """RFC 9110 9.3.2 / 15.5.6: HEAD is GET without a body; a method the resource does not support is 405 with
    an Allow header. Nothing but POST can decide."""
    arn = world.register()
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    dev = world.envs["dev"]
    token = mail.links()["approve"].split("token=", 1)[1]
    session = world.issuer.id_token(world.issuer.users["alice"], world.client_id)
    before = world.snapshot(arn)

    def call(method: str) -> dict:
        event = {
            "resource": "/links/{action}",
            "httpMethod": method,
            "pathParameters": {"action": "approve"},
            "queryStringParameters": {"token": token},
            "headers": {"cookie": f"mg_session={session}", "origin": dev.settings.api_url},
            "body": f"token={token}",
        }
        return approval_api.route(dev.runtime, event)

    get, head = call("GET"), call("HEAD")
    assert get["statusCode"] == head["statusCode"] == 200
    assert "Approve energy-forecast version 1" in get["body"]
    assert head["body"] == ""
    assert head["headers"]["Content-Type"] == get["headers"]["Content-Type"]
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        response = call(method)
        assert response["statusCode"] == 405, method
        assert response["headers"]["Allow"] == "GET, HEAD, POST"
    assert world.snapshot(arn) == before


def test_events_of_another_model_group_are_ignored_not_failed(world):
    """Events that are not ours are logged and dropped: raising would retry them into the failure queue and
    alarm the approvers."""
    foreign = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/another-group/1"
    event = world.registry_event(foreign)
    event["detail"]["ModelPackageGroupName"] = "another-group"
    result = request_approval.handle(event, world.envs["dev"].request_services)
    assert result["ignored"]
    assert "another-group" in result["note"]
    assert world.emails() == []
    run = {
        "source": "modelgate.inference",
        "detail-type": "ModelGate Inference Completed",
        "detail": {"run_id": "r1", "model_package_arn": foreign, "environment": "dev"},
    }
    outcome = post_inference.handle(run, world.envs["dev"].post_inference_services)
    assert outcome["ignored"]
    assert outcome["requested"] is False
