"""The approval stack as synthesized and deployed, its Lambdas each in its own process as Lambda runs them: with
exactly the environment the template gives them (only the two things that cannot exist locally are swapped: the
public API URL and the Cognito sign-in endpoints) and the credentials of their own execution roles. Catches what
calling the functions in-process cannot: variable names read at import, the handler paths, the rule patterns'
event shapes, a process's own credentials."""

from __future__ import annotations

import json

import pytest

from sandbox.approval import ApproverBrowser
from sandbox.rest_api import routes_from_template
from tests.integration.approval.conftest import APPROVERS, FIRST, GROUP, PROJECT

# The tests of one deployed world run together on one pytest-xdist worker (pyproject: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("approval-world-b")


def test_the_deployed_functions_email_sign_in_and_decide(world, tmp_path):
    deployed = world.world
    env = deployed.envs[FIRST]
    approval, storage = env.stacks["Approval"], env.stacks["Storage"]
    functions = deployed.functions[env.account.account]
    arn = world.register()
    # The rule's pattern (from the template) matches the registry's event.
    (rule,) = [
        r["Properties"]["EventPattern"]
        for r in approval.template["Resources"].values()
        if r["Type"] == "AWS::Events::Rule" and "SageMaker Model Package State Change" in json.dumps(r)
    ]
    event = world.registry_event(arn)
    assert event["detail"]["ModelPackageGroupName"] in rule["detail"]["ModelPackageGroupName"]

    request = approval.function("RequestApproval")
    assert functions.invoke(approval.name, request.logical_id, event)["sent"] == list(APPROVERS[FIRST])
    (mail,) = world.emails()

    # The link's API, with the template's routes to the approval API function's process.
    gateway, in_process = env.approval_api, env.approval_api.routes
    gateway.routes = routes_from_template(approval, functions.handler(approval.name))
    try:
        browser = ApproverBrowser("alice")
        page = browser.open(mail.links()["approve"])
        assert page.status == 200, page.text()
        result = browser.submit(page)
        log = functions.function(approval.name, approval.function("ApprovalApi").logical_id).name
        assert result.status == 200, (result.text(), log)
    finally:
        gateway.routes = in_process

    ssm = env.account.client("ssm")
    value = json.loads(ssm.get_parameter(Name=f"/{PROJECT}/{GROUP}/{FIRST}")["Parameter"]["Value"])
    assert value["model_package_arn"] == arn
    assert value["approved_by"] == "alice@example.com"
    history = env.account.client("dynamodb").scan(TableName=storage.physical_id("ApprovalHistory"))["Items"]
    assert len(history) == 1
