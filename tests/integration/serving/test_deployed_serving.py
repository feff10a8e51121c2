"""Two model groups served by the serving stacks (one `Serving-<model>` stack per model with its endpoint and deploy
function, the `Serving` stack with the inference API) as synthesized from config/examples/many-models.yaml, deployed
into the local AWS with IAM enforced: every Lambda runs with its own role's credentials, the inference API's routes come
from the template, each group's endpoint stand-in reads its ModelDataUrl with its execution role. What a grant
does not allow fails here as it would on AWS: one group's deploy role cannot touch another group's endpoint."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from modelgate.model_repository import ENSEMBLE_INPUT, ENSEMBLE_OUTPUT, WINDOW, target_model
from modelgate.parameters import ApprovedModel, parameter_name
from modelgate.serving import settings as names
from modelgate.serving.deployment import deployment_key, model_prefix
from modelgate.serving.settings import InferenceSettings
from sandbox import iam as local_iam
from sandbox.api_gateway import LocalApiGateway
from sandbox.aws import LocalAws
from sandbox.cloudformation import deploy_stage
from sandbox.deployed_functions import DeployedFunctions
from sandbox.model_archives import example_version, publish_version
from sandbox.multi_model_endpoint import LocalSageMakerRuntime
from sandbox.oidc_issuer import LocalIssuer
from sandbox.rest_api import routes_from_template
from tests.infra.test_serving import example_config, synthesize_example

ENV = "sandbox"  # the first environment of the example's chain (asserted below)
GROUPS = {"energy-forecast": ("acme", "globex"), "churn-scores": ("acme", "hooli")}  # acme in both


@pytest.fixture(scope="module")
def world(triton, tmp_path_factory):
    example = example_config()
    assert next(iter(example.environments)) == ENV
    assert tuple(model.model_package_group for model in example.models) == tuple(GROUPS)
    env = example.environments[ENV]
    outdir = tmp_path_factory.mktemp("deployed-serving")
    synthesize_example(example, outdir, environments=(ENV,))
    versions = {group: example_version(customers, seed=seed) for seed, (group, customers) in enumerate(GROUPS.items())}
    with LocalAws(env.region) as aws, LocalIssuer() as issuer:
        account = aws.account(env.account)
        stacks = deploy_stage(account, outdir / f"assembly-{example.project.name}-{ENV}")
        storage, serving = stacks["Storage"], stacks["Serving"]
        model_stacks = [stacks[f"Serving-{model.name}"] for model in example.models]
        s3 = account.client("s3")
        artifacts = storage.physical_id("Artifacts")
        for group, version in versions.items():
            url = publish_version(s3, artifacts, f"pipeline-run/models/{group}/v1", group, version.archives)
            account.client("ssm").put_parameter(
                Name=parameter_name(example.project.name, group, ENV), Type="String", Value=_approval(group, url)
            )
        runtime = LocalSageMakerRuntime.of_serving_stack(triton, serving, account)
        served = InferenceSettings.from_environ(serving.function("InferenceApiInvoke").environment).models
        assert sorted(runtime.endpoints) == sorted(model.endpoint_name for model in served)
        functions = DeployedFunctions(account, outdir / "logs")
        with runtime, LocalApiGateway([]) as gateway:
            for stack in model_stacks:
                functions.add(stack)
            functions.add(
                serving,
                **runtime.environ(),
                **{
                    names.JWT_ISSUER: issuer.issuer,
                    names.JWT_AUDIENCE: issuer.audience,
                    names.JWKS_URL: issuer.jwks_url,
                },
            )
            gateway.routes = routes_from_template(serving, functions.handler(serving.name))
            try:
                yield World(
                    account,
                    [serving, *model_stacks],
                    functions,
                    gateway,
                    issuer,
                    storage.physical_id("ModelRepository"),
                    versions,
                )
            finally:
                functions.close()


class World:
    def __init__(self, account, stacks, functions, gateway, issuer, repository, versions) -> None:
        self.account, self.stacks, self.functions, self.gateway = account, stacks, functions, gateway
        self.issuer, self.repository, self.versions = issuer, repository, versions

    def deploy_function(self, group: str) -> tuple[str, str]:
        """(stack name, logical id) of the group's deploy function (the one whose environment names the group)."""
        (found,) = [
            (stack.name, logical)
            for stack in self.stacks
            for logical, spec in stack.functions.items()
            if spec.handler == "lambdas.serving_deploy.handler" and spec.environment[names.GROUP] == group
        ]
        return found

    def deploy_spec(self, group: str):
        stack, logical = self.deploy_function(group)
        return next(s for s in self.stacks if s.name == stack).functions[logical]

    def call(self, path: str, body: dict | None = None, method: str = "POST") -> tuple[int, bytes]:
        token = self.issuer.mint(scope="inference:invoke")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.gateway.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def _approval(group: str, url: str) -> str:
    return ApprovedModel(
        model_package_group=group,
        environment=ENV,
        model_version=1,
        model_package_arn=f"arn:aws:sagemaker:eu-west-1:222222222222:model-package/{group}/1",
        model_data_url=url,
        approved_by="approver@example.com",
        approved_at="2026-12-01T10:00:00+00:00",
        source_environment=None,
    ).to_json()


def _request(values: np.ndarray) -> dict:
    return {
        "inputs": [
            {"name": ENSEMBLE_INPUT, "shape": list(values.shape), "datatype": "FP32", "data": values.ravel().tolist()}
        ]
    }


def test_each_groups_deploy_function_fills_its_own_prefix_with_its_own_role(world):
    for group, customers in GROUPS.items():
        report = world.functions.invoke(*world.deploy_function(group), {"action": "deploy"})
        assert (report["model_package_group"], report["copied"]) == (group, len(customers))
    s3 = world.account.client("s3")
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=world.repository)["Contents"]}
    assert keys == {
        *(
            model_prefix(group) + target_model(1, customer)
            for group, customers in GROUPS.items()
            for customer in customers
        ),
        *(deployment_key(group) for group in GROUPS),
    }


def test_both_groups_answer_through_the_templates_routes_each_with_its_own_model(world):
    values = np.random.default_rng(3).uniform(0.5, 5.0, (1, WINDOW)).astype(np.float32)
    answers = {}
    for group in GROUPS:
        status, payload = world.call(f"/groups/{group}/models/acme/invoke", _request(values))
        assert status == 200, payload
        (output,) = [o for o in json.loads(payload)["outputs"] if o["name"] == ENSEMBLE_OUTPUT]
        answers[group] = np.array(output["data"], np.float32).reshape(output["shape"])
        np.testing.assert_allclose(
            answers[group], world.versions[group].reference("acme", values), rtol=1e-5, atol=1e-5
        )
    assert not np.allclose(*answers.values())
    status, payload = world.call("/groups/churn-scores/models/globex/invoke", _request(values))
    assert (status, json.loads(payload)["code"]) == (404, "model_not_found"), "globex is energy-forecast's only"
    status, payload = world.call("/health", method="GET")
    assert status == 200, payload
    assert {group: state["model_version"] for group, state in json.loads(payload)["groups"].items()} == {
        group: 1 for group in GROUPS
    }


def test_one_groups_deploy_role_cannot_touch_the_other_groups_endpoint(world):
    """IAM, not only code: energy-forecast's deploy role may not write, delete or read the approval of churn-scores."""
    spec = world.deploy_spec("energy-forecast")
    assert world.deploy_function("energy-forecast")[0].endswith("-Serving-energy-forecast"), "in its model's stack"
    as_role = world.account.assume(spec.role, "lambda.amazonaws.com", session_name="deploy")
    s3, ssm = as_role.client("s3"), as_role.client("ssm")
    other = "churn-scores"
    refusals = (
        lambda: s3.put_object(Bucket=world.repository, Key=model_prefix(other) + "v9/acme.tar.gz", Body=b"x"),
        lambda: s3.delete_object(Bucket=world.repository, Key=model_prefix(other) + target_model(1, "acme")),
        lambda: s3.put_object(Bucket=world.repository, Key=deployment_key(other), Body=b"{}"),
        lambda: ssm.get_parameter(Name=parameter_name("modelgate", other, ENV)),
    )
    before = len(local_iam.DENIALS)
    for refused in refusals:
        with pytest.raises(Exception, match="AccessDenied"):
            refused()
    assert len(local_iam.DENIALS) - before == len(refusals), "each refused by the local IAM, as AWS would"
    # Its own prefix it may write (the grants are not simply missing).
    s3.put_object(Bucket=world.repository, Key=model_prefix("energy-forecast") + "probe", Body=b"x")
    s3.delete_object(Bucket=world.repository, Key=model_prefix("energy-forecast") + "probe")
