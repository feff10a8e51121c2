"""The approval stack as synthesized, deployed into the local AWS stand-in: its Lambdas run in their own processes
as their own roles, with exactly the environment the template gives them (only the two things that cannot exist
locally are swapped: the public API URL and the Cognito sign-in endpoints). Catches wiring mistakes that tests
calling the functions directly cannot: a missing grant, variable names, table keys, the key's spec, the rule
patterns' event shapes."""

from __future__ import annotations

import json

import pytest

from modelgate.approval.settings import API_URL, SignInSettings
from sandbox.api_gateway import LocalApiGateway, Route
from sandbox.approval import ApproverBrowser, register_version, registry_event, sent_emails
from sandbox.aws import LocalAws
from sandbox.cloudformation import deploy_stage
from sandbox.deployed_functions import function_environ
from sandbox.lambda_runner import LocalFunction
from sandbox.oidc_issuer import LocalIssuer


@pytest.fixture(scope="module")
def first(synth, config):
    """The chain's first environment (where versions arrive), deployed."""
    env = config.environments[config.chain.first]
    with LocalAws(env.region) as aws:
        account = aws.account(env.account)
        stacks = deploy_stage(account, synth.outdir / f"assembly-{config.project.name}-{env.name}")
        yield account, stacks


def test_the_deployed_functions_email_sign_in_and_decide(first, config, tmp_path):
    account, stacks = first
    approval, storage = stacks["Approval"], stacks["Storage"]
    model, env = config.models[0], config.chain.first
    group, approvers = model.model_package_group, model.environments[env].approvers
    arn = register_version(
        account, group=group, bucket=storage.physical_id("Artifacts"), registered_by="bob@example.com",
        chain=config.chain,
    )  # fmt: skip
    # The rule's pattern (from the template) matches the registry's event.
    (rule,) = [
        r["Properties"]["EventPattern"]
        for r in approval.template["Resources"].values()
        if r["Type"] == "AWS::Events::Rule" and "SageMaker Model Package State Change" in json.dumps(r)
    ]
    event = registry_event(arn, group, account.account, account.region)
    assert event["detail"]["ModelPackageGroupName"] in rule["detail"]["ModelPackageGroupName"]

    request = approval.function("RequestApproval")
    with LocalFunction(request.name, request.handler, function_environ(account, request), log=tmp_path / "r.log") as fn:
        assert fn.invoke(event)["sent"] == list(approvers.emails)
    (mail,) = sent_emails(account.account, account.region)

    api = approval.function("ApprovalApi")
    with LocalIssuer(client_ids=("local-client",)) as issuer, LocalApiGateway([]) as gateway:
        issuer.add_user("alice", "alice@example.com", [approvers.group])
        sign_in = SignInSettings(issuer.issuer, issuer.jwks_url, issuer.authorize_url, issuer.token_url, "local-client")
        environment = function_environ(account, api, **sign_in.environ(), **{API_URL: gateway.url})
        with LocalFunction(api.name, api.handler, environment, log=tmp_path / "a.log") as fn:
            gateway.routes = [
                Route(m, r, fn)
                for m, r in (("GET", "/links/{action}"), ("POST", "/links/{action}"), ("GET", "/auth/callback"))
            ]
            link = mail.links()["approve"].replace(request.environment[API_URL], gateway.url)
            browser = ApproverBrowser("alice")
            page = browser.open(link)
            assert page.status == 200, page.text()
            result = browser.submit(page)
            assert result.status == 200, (result.text(), (tmp_path / "a.log").read_text()[-2000:])

    ssm = account.client("ssm")
    value = json.loads(ssm.get_parameter(Name=f"/{config.project.name}/{group}/{env}")["Parameter"]["Value"])
    assert value["model_package_arn"] == arn
    assert value["approved_by"] == "alice@example.com"
    history = account.client("dynamodb").scan(TableName=storage.physical_id("ApprovalHistory"))["Items"]
    assert len(history) == 1
