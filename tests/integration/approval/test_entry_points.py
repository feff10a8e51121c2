"""The deployed entry points: handlers configured only by their environment variables, and the transform-job
trigger of the post-inference Lambda."""

from __future__ import annotations

import pytest

from lambdas import approval_api, post_inference, request_approval
from sandbox.api_gateway import LambdaContext
from sandbox.approval import ApproverBrowser
from tests.integration.approval.conftest import ACCOUNT, REGION


@pytest.fixture
def deployed_env(world, monkeypatch):
    """dev's settings as the stack sets them, in the process environment; caches cleared around the test."""
    dev = world.envs["dev"]
    for name, value in {**dev.settings.environ(), **dev.runtime.sign_in.environ()}.items():
        monkeypatch.setenv(name, value)
    for cached in (approval_api.runtime, request_approval.services, post_inference.services):
        cached.cache_clear()
    yield dev
    for cached in (approval_api.runtime, request_approval.services, post_inference.services):
        cached.cache_clear()


def test_handlers_build_their_clients_from_the_environment(world, deployed_env):
    arn = world.register()
    result = request_approval.handler(world.registry_event(arn), LambdaContext(function_name="request-approval"))
    assert result["sent"] == list(deployed_env.settings.approver_emails)
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
