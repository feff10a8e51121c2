"""The local API Gateway applies the RequestValidator, required request parameters and request models that the
synthesized templates declare: what API Gateway refuses with 400 never reaches the function locally either."""

from __future__ import annotations

import json

import pytest

from sandbox.api_gateway import LocalApiGateway
from sandbox.cloudformation import DeployedStack, stage_stacks
from sandbox.rest_api import routes_from_template


def _stack(synth, config, kind: str) -> DeployedStack:
    stage = synth.outdir / f"assembly-{config.project.name}-dev"
    (path,) = [template for name, template, _ in stage_stacks(stage) if name.endswith(f"-{kind}")]
    return DeployedStack(name=kind, template=json.loads(path.read_text()))


def _allow(event, context):
    return {
        "principalId": "app",
        "policyDocument": {"Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}]},
    }


@pytest.fixture
def gateway(synth, config):
    calls: list[dict] = []

    def handler(logical_id: str):
        if "Authorizer" in logical_id:
            return _allow

        def record(event, context=None):
            calls.append(event)
            return {"statusCode": 200, "body": "{}"}

        return record

    with LocalApiGateway([]) as api:
        api.routes = routes_from_template(_stack(synth, config, "Serving"), handler) + routes_from_template(
            _stack(synth, config, "Approval"), handler
        )
        yield api, calls


JSON = {"content-type": "application/json", "authorization": "Bearer x"}


def test_a_body_the_inference_model_refuses_is_400_before_the_function(gateway):
    """API Gateway request validation (ValidateRequestBody): the KServe v2 model requires name, shape, datatype."""
    api, calls = gateway
    body = json.dumps({"inputs": [{"name": "READINGS"}]}).encode()
    status, _, payload = api.dispatch("POST", "/groups/energy-forecast/models/c-1/invoke", JSON, body)
    assert (status, json.loads(payload)) == (400, {"message": "Invalid request body"})
    status, _, _ = api.dispatch("POST", "/groups/energy-forecast/models/c-1/invoke", JSON, b"not json")
    assert status == 400
    assert calls == []
    good = {"inputs": [{"name": "READINGS", "shape": [1, 168], "datatype": "FP32", "data": [0.0] * 168}]}
    status, _, _ = api.dispatch("POST", "/groups/energy-forecast/models/c-1/invoke", JSON, json.dumps(good).encode())
    assert status == 200
    assert len(calls) == 1


def test_a_missing_required_parameter_is_400_naming_it(gateway):
    """ValidateRequestParameters: the approval link's GET requires the `token` query string parameter, the
    inference POST its Content-Type header."""
    api, calls = gateway
    status, _, payload = api.dispatch("GET", "/links/approve", {}, b"")
    assert (status, json.loads(payload)) == (400, {"message": "Missing required request parameters: [token]"})
    status, _, _ = api.dispatch("GET", "/links/approve?token=", {}, b"")
    assert status == 400, "blank counts as missing"
    status, _, payload = api.dispatch(
        "POST", "/groups/energy-forecast/models/c-1/invoke", {"authorization": "Bearer x"}, b"{}"
    )
    assert (status, json.loads(payload)) == (400, {"message": "Missing required request parameters: [Content-Type]"})
    assert calls == []
    status, _, _ = api.dispatch("GET", "/links/approve?token=abc", {}, b"")
    assert status == 200
