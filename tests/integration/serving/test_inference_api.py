"""The inference path end to end: HTTP -> API Gateway stand-in -> the real JWT authorizer -> the real invoke
Lambda (own process, boto3 as deployed) -> the SageMaker multi-model endpoint stand-in of the group in the path
-> a real Triton running the archives that group's deploy step copied from the artifacts bucket (moto server)
into the group's prefix. Two model groups are served side by side, as one environment of
config/examples/many-models.yaml serves them: energy-forecast and churn-scores, both with a customer `acme`."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

from modelgate.function_settings import TASK_ROOT
from modelgate.model_repository import (
    ENSEMBLE_INPUT,
    ENSEMBLE_OUTPUT,
    ENSEMBLE_OUTPUTS,
    ENSEMBLE_P10,
    ENSEMBLE_P90,
    WINDOW,
    target_model,
)
from modelgate.parameters import ApprovedModel, parameter_name
from modelgate.serving import deploy_lock
from modelgate.serving import settings as names
from modelgate.serving.deployment import deployment_key, model_prefix
from modelgate.serving.protocol import MAX_BODY_BYTES, TRITON_BINARY_JSON
from pipelines.steps import quantiles
from sandbox.api_gateway import Authorizer, LocalApiGateway, Route
from sandbox.aws import LocalAws
from sandbox.lambda_runner import FunctionError, LocalFunction, LocalFunctionPool
from sandbox.model_archives import example_version, publish_version
from sandbox.multi_model_endpoint import LocalSageMakerRuntime
from sandbox.oidc_issuer import LocalIssuer

ENV, GROUP, ACCOUNT = "sandbox", "energy-forecast", "999999999999"  # moto's state is per process: our own account
CUSTOMERS = ("acme", "globex", "initech", "umbrella")
OTHER, OTHER_CUSTOMERS = "churn-scores", ("acme", "hooli")  # the second group: `acme` in both, other weights
ENDPOINT = "modelgate-sandbox-endpoint"
MME_PREFIX = model_prefix(GROUP)
EF, CHURN = f"/groups/{GROUP}", f"/groups/{OTHER}"  # the API's path of each group


@pytest.fixture(scope="module")
def versions():
    """Version 1 of every customer, and a version 2 of two of them (other weights), packaged by the pipeline;
    last, version 1 of the other group (again other weights)."""
    return (
        example_version(CUSTOMERS, seed=1),
        example_version(("acme", "globex"), seed=2),
        example_version(OTHER_CUSTOMERS, seed=5),
    )


@pytest.fixture(scope="module")
def stack(triton, versions, tmp_path_factory):
    """Everything a deployed environment has on the inference path, wired like the Serving stack wires it."""
    with LocalAws("eu-west-1") as aws, LocalIssuer() as issuer:
        account = aws.account(ACCOUNT)
        s3, ssm = account.client("s3"), account.client("ssm")
        run = uuid.uuid4().hex[:8]  # fresh names: moto's state outlives this fixture within the process
        artifacts, repository, endpoint_name = f"artifacts-{run}", f"model-repository-{run}", f"{ENDPOINT}-{run}"
        for bucket in (artifacts, repository):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        url = publish_version(s3, artifacts, "v1", GROUP, versions[0].archives)
        parameter = parameter_name("modelgate", GROUP, ENV)
        ssm.put_parameter(Name=parameter, Type="String", Value=approval(1, url), Overwrite=True)
        other_url = publish_version(s3, artifacts, "churn/v1", OTHER, versions[2].archives)
        other_parameter = parameter_name("modelgate", OTHER, ENV)
        ssm.put_parameter(Name=other_parameter, Type="String", Value=approval(1, other_url, OTHER), Overwrite=True)
        other_endpoint_name = f"modelgate-sandbox-churn-{run}"
        _sagemaker_endpoint(account.client("sagemaker"), endpoint_name, repository, GROUP)
        _sagemaker_endpoint(account.client("sagemaker"), other_endpoint_name, repository, OTHER)
        common = {names.BUCKET: repository, names.ENVIRONMENT: ENV}
        locks = f"deploy-locks-{run}"
        account.client("dynamodb").create_table(
            TableName=locks,
            KeySchema=[{"AttributeName": deploy_lock.PARTITION_KEY, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": deploy_lock.PARTITION_KEY, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        lease = {names.DEPLOY_LOCK_TABLE: locks, names.DEPLOY_LEASE_SECONDS: "900"}
        # One deploy function per group (each model's Serving-<model> stack), one lease table each.
        deploy = LocalFunction(
            "deploy",
            "lambdas.serving_deploy.handler",
            account.environ(**common, **lease, **{names.PARAMETER: parameter, names.GROUP: GROUP}),
        )
        other_deploy = LocalFunction(
            "deploy-churn",
            "lambdas.serving_deploy.handler",
            account.environ(**common, **lease, **{names.PARAMETER: other_parameter, names.GROUP: OTHER}),
        )
        # The endpoints as recorded in SageMaker: each reads its ModelDataUrl (its group's prefix).
        runtime = LocalSageMakerRuntime.of_endpoints(
            triton, (endpoint_name, other_endpoint_name), account.client("sagemaker"), lambda role: s3
        )
        endpoint, other_endpoint = runtime.endpoints[endpoint_name], runtime.endpoints[other_endpoint_name]
        assert (endpoint.source.location, other_endpoint.source.location) == (
            f"s3://{repository}/{MME_PREFIX}",
            f"s3://{repository}/{model_prefix(OTHER)}",
        )
        with deploy, other_deploy, runtime:
            assert deploy.invoke({"action": "deploy", "reason": "test"})["copied"] == len(CUSTOMERS)
            assert other_deploy.invoke({"action": "deploy", "group": OTHER})["copied"] == len(OTHER_CUSTOMERS)
            served = [
                names.ServedModel("energy-forecast", GROUP, endpoint_name),
                names.ServedModel("churn", OTHER, other_endpoint_name),
            ]
            package = tmp_path_factory.mktemp("invoke-package")  # what the stack ships in the function's package
            for name, text in names.served_models_files(served).items():
                (package / name).write_text(text)
            api_env = account.environ(**common, **runtime.environ(), **{TASK_ROOT: str(package)})
            api_env[names.DEPLOYMENT_CACHE_SECONDS] = "0"  # see each deploy at once (the retry path: unit tests)
            jwt_env = {
                names.JWT_ISSUER: issuer.issuer,
                names.JWT_AUDIENCE: issuer.audience,
                names.JWKS_URL: issuer.jwks_url,
            }
            with (
                LocalFunctionPool(
                    [LocalFunction(f"invoke-{i}", "lambdas.inference_api.handler", api_env) for i in (1, 2)]
                ) as api,
                LocalFunction("authorizer", "lambdas.inference_authorizer.handler", jwt_env) as authorizer,
            ):
                routes = [
                    Route("POST", "/groups/{group}/models/{customer}/invoke", api, Authorizer(authorizer)),
                    Route("GET", "/groups/{group}/health", api, Authorizer(authorizer)),
                    Route("GET", "/health", api, Authorizer(authorizer)),
                ]
                with LocalApiGateway(routes) as gateway:
                    yield Stack(
                        gateway, issuer, endpoint, s3, ssm, deploy, parameter, artifacts, repository, other_endpoint
                    )


class Stack:
    def __init__(self, gateway, issuer, endpoint, s3, ssm, deploy, parameter, artifacts, repository, other) -> None:
        self.gateway, self.issuer, self.endpoint, self.other_endpoint = gateway, issuer, endpoint, other
        self.s3, self.ssm, self.deploy, self.parameter = s3, ssm, deploy, parameter
        self.artifacts, self.repository = artifacts, repository

    def invocations(self) -> tuple[int, int]:
        return self.endpoint.stats.invocations, self.other_endpoint.stats.invocations

    def call(self, path, body=None, *, token=None, content_type="application/json", method="POST", scope=None):
        token = token if token is not None else self.issuer.mint(scope=scope or "inference:invoke")
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.gateway.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()


def approval(version: int, url: str, group: str = GROUP) -> str:
    return ApprovedModel(
        model_package_group=group,
        environment=ENV,
        model_version=version,
        model_package_arn=f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:model-package/{group}/{version}",
        model_data_url=url,
        approved_by="approver@example.com",
        approved_at="2026-11-22T10:00:00+00:00",
        source_environment=None,
    ).to_json()


def _sagemaker_endpoint(sagemaker, name: str, bucket: str, group: str) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/sagemaker"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn=role,
        PrimaryContainer={
            "Image": "triton",
            "Mode": "MultiModel",
            "ModelDataUrl": f"s3://{bucket}/{model_prefix(group)}",
        },
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.g4dn.xlarge",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)


def readings(rows: int = 2, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).uniform(0.5, 5.0, (rows, WINDOW)).astype(np.float32)
    values[0, :5] = np.nan  # a gap at the start: nothing to carry forward
    values[-1, 100:110] = np.nan  # a gap in the middle: the last reading is carried forward
    return values


def kserve(values: np.ndarray) -> dict:
    # NaN is not JSON, but Triton's parser (like Python's json) reads the NaN literal: gaps travel as NaN.
    return {
        "inputs": [
            {"name": ENSEMBLE_INPUT, "shape": list(values.shape), "datatype": "FP32", "data": values.ravel().tolist()}
        ]
    }


def outputs(payload: bytes) -> dict[str, np.ndarray]:
    answer = json.loads(payload)["outputs"]
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in answer}


def forecast(payload: bytes) -> np.ndarray:
    return outputs(payload)[ENSEMBLE_OUTPUT]


def test_a_valid_token_gets_the_ensembles_forecast_and_its_quantiles(stack, versions):
    values = readings()
    status, headers, payload = stack.call(EF + "/models/acme/invoke", kserve(values))
    assert status == 200, payload
    assert headers["X-Model-Version"] == "1"
    expected = versions[0].reference("acme", values)
    answer = outputs(payload)
    assert sorted(answer) == sorted(ENSEMBLE_OUTPUTS)  # a request naming no output gets every one
    np.testing.assert_allclose(answer[ENSEMBLE_OUTPUT], expected, rtol=1e-5, atol=1e-5)
    models = versions[0].models
    index = models.customers.index("acme")
    low, high = quantiles.bounds(expected, *(t[index].numpy() for t in models.intervals.tensors()))
    np.testing.assert_allclose(answer[ENSEMBLE_P10], low, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(answer[ENSEMBLE_P90], high, rtol=1e-5, atol=1e-5)
    assert (answer[ENSEMBLE_P10] < answer[ENSEMBLE_OUTPUT]).all()
    assert (answer[ENSEMBLE_OUTPUT] < answer[ENSEMBLE_P90]).all()
    assert target_model(1, "acme") in stack.endpoint.loaded()


def test_json_nulls_are_gaps(stack, versions):
    """Standard JSON has no NaN (API Gateway's validator refuses it): clients mark gaps with null."""
    values = readings(seed=11)
    data = [None if np.isnan(x) else float(x) for x in values.ravel()]
    body = {"inputs": [{"name": ENSEMBLE_INPUT, "shape": list(values.shape), "datatype": "FP32", "data": data}]}
    status, _, payload = stack.call(EF + "/models/acme/invoke", json.dumps(body, allow_nan=False).encode())
    assert status == 200, payload
    np.testing.assert_allclose(forecast(payload), versions[0].reference("acme", values), rtol=1e-5, atol=1e-5)


def test_a_window_without_any_reading_is_refused_with_the_models_reason(stack):
    values = np.full((1, WINDOW), np.nan, np.float32)
    status, _, payload = stack.call(EF + "/models/acme/invoke", kserve(values))
    answer = json.loads(payload)
    assert (status, answer["code"]) == (400, "invalid_inference_request")
    assert "holds no reading" in answer["error"]


def test_a_readings_row_of_the_wrong_length_is_400_naming_the_sizes_not_502(stack):
    """A KServe v2 tensor holds one value per element of its shape (Triton answered 500 for this, the API 502)."""
    values = readings(rows=2)
    body = kserve(values)
    body["inputs"][0]["data"] = [values[0].tolist(), values[1, 1:].tolist()]  # the second row one hour short
    status, _, payload = stack.call(EF + "/models/acme/invoke", body)
    answer = json.loads(payload)
    assert (status, answer["code"]) == (400, "invalid_inference_request")
    assert f"holds {2 * WINDOW - 1} values; shape [2, {WINDOW}] needs {2 * WINDOW}" in answer["error"]


def test_the_triton_binary_json_content_type_round_trips(stack, versions):
    values = readings(rows=3, seed=7)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": ENSEMBLE_INPUT,
                    "shape": [3, WINDOW],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes},
                }
            ],
            "outputs": [{"name": ENSEMBLE_OUTPUT, "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, payload = stack.call(
        EF + "/models/globex/invoke",
        header + values.tobytes(),
        content_type=f"{TRITON_BINARY_JSON};json-header-size={len(header)}",
    )
    assert status == 200, payload
    content_type = headers["Content-Type"]
    assert content_type.startswith(TRITON_BINARY_JSON)
    size = int(content_type.split("json-header-size=")[1])
    meta = json.loads(payload[:size])
    assert [o["name"] for o in meta["outputs"]] == [ENSEMBLE_OUTPUT]  # it named FORECAST: FORECAST alone
    got = np.frombuffer(payload[size:], np.float32).reshape(meta["outputs"][0]["shape"])
    np.testing.assert_allclose(got, versions[0].reference("globex", values), rtol=1e-5, atol=1e-5)


def test_health_reports_each_groups_deployed_version(stack):
    status, _, payload = stack.call(EF + "/health", method="GET", content_type=None)
    assert status == 200, payload
    energy = {
        "status": "ok",
        "model": "energy-forecast",
        "model_package_group": GROUP,
        "endpoint_status": "InService",
        "model_version": 1,
        "models": 4,
    }
    assert json.loads(payload) == energy
    status, _, payload = stack.call("/health", method="GET", content_type=None)
    assert status == 200, payload
    churn = {**energy, "model": "churn", "model_package_group": OTHER, "models": len(OTHER_CUSTOMERS)}
    assert json.loads(payload) == {"status": "ok", "groups": {GROUP: energy, OTHER: churn}}


def test_two_groups_are_served_side_by_side_each_by_its_own_model(stack, versions):
    """`acme` has a model in both groups: each path answers with its own group's model, on its own endpoint."""
    values = readings(seed=21)
    before = stack.invocations()
    status, _, energy = stack.call(EF + "/models/acme/invoke", kserve(values))
    assert status == 200, energy
    status, headers, churn = stack.call(CHURN + "/models/acme/invoke", kserve(values))
    assert status == 200, churn
    assert headers["X-Model-Version"] == "1"
    np.testing.assert_allclose(forecast(energy), versions[0].reference("acme", values), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(forecast(churn), versions[2].reference("acme", values), rtol=1e-5, atol=1e-5)
    assert not np.allclose(forecast(energy), forecast(churn)), "two models, two answers"
    assert stack.invocations() == (before[0] + 1, before[1] + 1), "each group's request went to its own endpoint"
    assert target_model(1, "acme") in stack.other_endpoint.loaded()


def test_a_customer_of_one_group_is_never_reachable_through_another_groups_path(stack, versions):
    """globex has a model only in energy-forecast; hooli only in churn-scores (and even an archive of hooli
    dropped into energy-forecast's prefix by hand is not served through either path)."""
    stack.s3.put_object(Bucket=stack.repository, Key=MME_PREFIX + "v1/hooli.tar.gz", Body=versions[2].archives["hooli"])
    before = stack.invocations()
    try:
        for path in (CHURN + "/models/globex/invoke", EF + "/models/hooli/invoke"):
            status, _, payload = stack.call(path, kserve(readings()))
            assert (status, json.loads(payload)["code"]) == (404, "model_not_found"), path
    finally:
        stack.s3.delete_object(Bucket=stack.repository, Key=MME_PREFIX + "v1/hooli.tar.gz")
    assert stack.invocations() == before, "never sent to any endpoint"
    status, _, _ = stack.call(CHURN + "/models/hooli/invoke", kserve(readings()))
    assert status == 200


def test_an_unknown_model_group_is_404_naming_the_served_ones(stack):
    before = stack.invocations()
    for path in ("/groups/churn/models/acme/invoke", "/groups/energy-forecast-eu/models/acme/invoke"):
        status, _, payload = stack.call(path, kserve(readings()))
        answer = json.loads(payload)
        assert (status, answer["code"]) == (404, "unknown_model_group"), payload
        assert f"served models: {GROUP}, {OTHER}" in answer["error"]
    status, _, payload = stack.call("/groups/nope/health", method="GET", content_type=None)
    assert (status, json.loads(payload)["code"]) == (404, "unknown_model_group")
    assert stack.invocations() == before


def test_a_groups_deploy_function_refuses_the_other_groups_approval_and_changes_nothing(stack):
    """The deploy function of energy-forecast, handed churn-scores' Parameter Store change or a manual run for it."""
    listing = stack.s3.list_objects_v2(Bucket=stack.repository)["Contents"]
    before = {(item["Key"], item["ETag"]) for item in listing}
    other = parameter_name("modelgate", OTHER, ENV)
    change = {"source": "aws.ssm", "detail-type": "Parameter Store Change", "detail": {"name": other}}
    for event, fragment in (
        (change, f"this step serves '{stack.parameter}'"),
        ({"action": "deploy", "group": OTHER}, f"deploys model group '{GROUP}', not '{OTHER}'"),
    ):
        with pytest.raises(FunctionError, match="UnexpectedEvent") as refused:
            stack.deploy.invoke(event)
        assert fragment in str(refused.value)
    after = {(item["Key"], item["ETag"]) for item in stack.s3.list_objects_v2(Bucket=stack.repository)["Contents"]}
    assert after == before


def test_bad_or_missing_tokens_are_unauthorized_and_never_reach_the_endpoint(stack):
    before = stack.invocations()
    forged = LocalIssuer()
    forged._server = stack.issuer._server  # same issuer URL, a key the issuer never published
    for token in ("garbage", stack.issuer.mint(ttl_seconds=-600), forged.mint(scope="inference:invoke")):
        status, _, payload = stack.call(EF + "/models/acme/invoke", kserve(readings()), token=token)
        assert (status, json.loads(payload)) == (401, {"message": "Unauthorized"})
    assert stack.invocations() == before


def test_a_token_scoped_to_one_model_cannot_invoke_another(stack):
    status, _, _ = stack.call(EF + "/models/acme/invoke", kserve(readings()), scope="inference:invoke:acme")
    assert status == 200
    status, _, payload = stack.call(EF + "/models/globex/invoke", kserve(readings()), scope="inference:invoke:acme")
    assert status == 403, payload
    status, _, _ = stack.call(EF + "/models/acme/invoke", kserve(readings()), scope="openid")
    assert status == 403
    # The customer is the tenant: its scope reaches its models in every group, no other customer's anywhere.
    status, _, _ = stack.call(CHURN + "/models/acme/invoke", kserve(readings()), scope="inference:invoke:acme")
    assert status == 200
    status, _, _ = stack.call(CHURN + "/models/hooli/invoke", kserve(readings()), scope="inference:invoke:acme")
    assert status == 403
    # A group scope reaches every customer of that group and nothing of another group.
    group_scope = f"inference:invoke:{OTHER}/*"
    status, _, _ = stack.call(CHURN + "/models/hooli/invoke", kserve(readings()), scope=group_scope)
    assert status == 200
    before = stack.invocations()
    status, _, payload = stack.call(EF + "/models/acme/invoke", kserve(readings()), scope=group_scope)
    assert status == 403, payload
    assert stack.invocations() == before


def test_a_model_outside_the_deployment_is_404_and_never_sent_to_sagemaker(stack, versions):
    # An object nobody approved, put straight into the endpoint's prefix: not reachable through the API.
    stack.s3.put_object(Bucket=stack.repository, Key=MME_PREFIX + "v1/hooli.tar.gz", Body=versions[0].archives["acme"])
    before = stack.endpoint.stats.invocations
    status, _, payload = stack.call(EF + "/models/hooli/invoke", kserve(readings()))
    assert (status, json.loads(payload)["code"]) == (404, "model_not_found")
    assert stack.endpoint.stats.invocations == before
    stack.s3.delete_object(Bucket=stack.repository, Key=MME_PREFIX + "v1/hooli.tar.gz")


def test_a_deployed_model_missing_from_the_endpoints_prefix_maps_to_404(stack):
    key = MME_PREFIX + target_model(1, "initech")
    archive = stack.s3.get_object(Bucket=stack.repository, Key=key)["Body"].read()
    stack.s3.delete_object(Bucket=stack.repository, Key=key)
    try:
        status, _, payload = stack.call(EF + "/models/initech/invoke", kserve(readings()))
        assert (status, json.loads(payload)["code"]) == (404, "model_not_found"), payload
        assert "Failed to download" not in payload.decode(), "SageMaker's internals are not passed on"
    finally:
        stack.s3.put_object(Bucket=stack.repository, Key=key, Body=archive)


def test_throttling_maps_to_429_with_retry_after(stack):
    stack.call(EF + "/models/acme/invoke", kserve(readings()))  # loaded: only admission is tested
    stack.endpoint.set_rate(0.001, burst=1)
    try:
        first, _, _ = stack.call(EF + "/models/acme/invoke", kserve(readings()))
        status, headers, payload = stack.call(EF + "/models/acme/invoke", kserve(readings()))
    finally:
        stack.endpoint.set_rate(None)
    assert first == 200
    assert (status, json.loads(payload)["code"]) == (429, "throttled")
    assert headers["Retry-After"] == "1"


def test_a_model_still_loading_maps_to_503_with_retry_after(stack):
    target = target_model(1, "umbrella")
    assert target not in stack.endpoint.loaded()
    first: dict = {}
    loader = threading.Thread(
        target=lambda: first.update(status=stack.call(EF + "/models/umbrella/invoke", kserve(readings()))[0])
    )
    loader.start()
    deadline = time.monotonic() + 30
    while target not in stack.endpoint.loading() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert target in stack.endpoint.loading(), "the first request should be loading the model"
    status, headers, payload = stack.call(EF + "/models/umbrella/invoke", kserve(readings()))
    loader.join()
    assert (status, json.loads(payload)["code"]) == (503, "model_loading")
    assert int(headers["Retry-After"]) > 0
    assert first["status"] == 200, "the request that triggered the load is answered once it is loaded"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        ({"inputs": []}, "application/json", 400, "non-empty 'inputs'"),
        (
            {"inputs": [{"name": "READINGS", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}]},
            "application/json",
            400,
            "needs numbers",
        ),
        (b"READINGS,1,2,3", "text/csv", 415, "unsupported Content-Type"),
        (b"{}", f"{TRITON_BINARY_JSON}", 415, "json-header-size"),
        (b"x" * (MAX_BODY_BYTES + 1), "application/json", 413, "limit"),
    ],
)
def test_malformed_requests_are_refused_before_the_endpoint(stack, body, content_type, status, fragment):
    before = stack.endpoint.stats.invocations
    got, _, payload = stack.call(EF + "/models/acme/invoke", body, content_type=content_type)
    assert got == status, payload
    assert fragment in json.loads(payload)["error"]
    assert stack.endpoint.stats.invocations == before


def test_tensors_triton_refuses_come_back_as_400_with_tritons_message(stack):
    body = {"inputs": [{"name": "TEMPERATURE", "shape": [1, WINDOW], "datatype": "FP32", "data": [1.0] * WINDOW}]}
    status, _, payload = stack.call(EF + "/models/acme/invoke", body)
    answer = json.loads(payload)
    assert (status, answer["code"]) == (400, "invalid_inference_request")
    assert "TEMPERATURE" in answer["error"]


def test_an_invalid_model_id_is_400(stack):
    status, _, payload = stack.call(EF + "/models/ACME%2E%2E/invoke", kserve(readings()))
    assert (status, json.loads(payload)["code"]) == (400, "invalid_model")


def test_a_new_approval_is_served_under_a_new_name_and_the_old_version_is_gone(stack, versions):
    values = readings(seed=3)
    url = publish_version(stack.s3, stack.artifacts, "v2", GROUP, versions[1].archives)
    stack.ssm.put_parameter(Name=stack.parameter, Type="String", Value=approval(2, url), Overwrite=True)
    change = {
        "source": "aws.ssm",
        "detail-type": "Parameter Store Change",
        "detail": {"name": stack.parameter, "operation": "Update"},
    }
    report = stack.deploy.invoke(change)
    assert (report["model_version"], report["copied"], report["removed"]) == (2, 2, len(CUSTOMERS))
    status, headers, payload = stack.call(EF + "/models/acme/invoke", kserve(values))
    assert (status, headers["X-Model-Version"]) == (200, "2")
    np.testing.assert_allclose(forecast(payload), versions[1].reference("acme", values), rtol=1e-5, atol=1e-5)
    assert target_model(2, "acme") in stack.endpoint.loaded()
    assert target_model(1, "acme") not in stack.endpoint.loaded(), "the new version's models replaced the old ones"
    status, _, _ = stack.call(EF + "/models/initech/invoke", kserve(values))
    assert status == 404, "no longer approved, no longer served"
    # The other group's endpoint, archives and record are untouched: still version 1, same answers.
    assert {
        o["Key"] for o in stack.s3.list_objects_v2(Bucket=stack.repository, Prefix=model_prefix(OTHER))["Contents"]
    } == {model_prefix(OTHER) + target_model(1, c) for c in OTHER_CUSTOMERS}
    record = json.loads(stack.s3.get_object(Bucket=stack.repository, Key=deployment_key(OTHER))["Body"].read())
    assert record["model_version"] == 1
    status, headers, payload = stack.call(CHURN + "/models/acme/invoke", kserve(values))
    assert (status, headers["X-Model-Version"]) == (200, "1")
    np.testing.assert_allclose(forecast(payload), versions[2].reference("acme", values), rtol=1e-5, atol=1e-5)
