"""Acceptance (issue 13): config/examples/many-models.yaml driven through its own chain with the real handlers.

Two model groups travel sandbox -> staging -> prod (whatever the example names them: the test reads the chain and
the models from the config); churn's last environment needs a quorum of 2: the version moves there only at the
second distinct approval, never counting the registrant, never the same person twice; energy-forecast's history
and Parameter Store records never mix with churn's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from demo.local_config import single_account_variant
from infra.config import load_config
from modelgate.approval import links
from modelgate.approval.history import history_put
from modelgate.registry import APPROVED, PENDING
from sandbox.approval import ApproverBrowser
from sandbox.approval_workflow import LocalApprovalWorkflow
from tests.integration.approval.conftest import EVALUATION, as_operator, deployed_world
from tests.integration.approval.test_flow import inference_completed

EXAMPLE = Path("config/examples/many-models.yaml")
CONFIG = load_config(EXAMPLE)
CHAIN = CONFIG.chain
ENERGY, CHURN = (CONFIG.model("energy-forecast"), CONFIG.model("churn"))
# The example's approvers: one group everywhere; the last environment mails two addresses.
APPROVERS_GROUP = CONFIG.environments[CHAIN.first].approvers.group
PEOPLE = (
    ("alice", "alice@example.com", (APPROVERS_GROUP,)),
    ("dave", "dave@example.com", (APPROVERS_GROUP,)),
    ("bob", "bob@example.com", (APPROVERS_GROUP,)),  # registers both models, and is an approver too
)
# One group of tests on one pytest-xdist worker: deployed once there (pyproject: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("many-models")


@pytest.fixture(scope="session")
def many_models_world(tmp_path_factory):
    """The example deployed, every environment in its first one's account (as the demo does it)."""
    local = tmp_path_factory.mktemp("many-models") / "many-models.yaml"
    yield from deployed_world(local, single_account_variant(EXAMPLE, local), people=PEOPLE)


@pytest.fixture
def platform(many_models_world):
    deployed = many_models_world.get()
    with deployed.use():
        yield LocalApprovalWorkflow(deployed)


def mails(world, name: str, env: str):
    """The e-mails asking `env`'s approvers about model `name` (subjects name the model and its group)."""
    model = CONFIG.model(name)
    named = model.name if model.name == model.model_package_group else f"{model.name} ({model.model_package_group})"
    return [m for m in world.emails() if f" {named} v" in m.subject and m.subject.rstrip("?").endswith(f" {env}")]


def test_two_models_travel_the_chain_and_churns_last_step_needs_two_distinct_approvers(platform):
    world = platform
    assert world.groups == (ENERGY.model_package_group, CHURN.model_package_group)
    arns = {
        model.name: world.register("bob@example.com", EVALUATION, model.model_package_group)
        for model in (ENERGY, CHURN)
    }
    first = CHAIN.first
    for arn in arns.values():  # one request Lambda handles every configured group
        world.request(first, world.registry_event(arn))

    quorum_env = next(env for env in CHAIN if CHURN.environments[env].approvers.quorum == 2)
    assert quorum_env == CHAIN.last
    for env in CHAIN:
        for model in (ENERGY, CHURN):
            group = model.model_package_group
            expected = model.environments[env].approvers.emails
            sent = mails(world, model.name, env)
            assert len(sent) == len(expected), f"one e-mail per approver of {model.name} in {env}"
            # Each approver once, in every environment (the local SES once listed each recipient twice).
            assert sorted(r for m in sent for r in m.recipients) == sorted(expected), f"{model.name} {env}"
            assert all(f"Model: {model.name}" in m.text for m in sent), "the e-mail names the model"
            if model is CHURN and env == quorum_env:
                decide_with_quorum(world, env, arns[model.name], sent)
            else:
                alice = ApproverBrowser("alice")
                page = alice.open(sent[0].links()["approve"])
                assert page.status == 200, page.text()
                assert "Approvals:" not in page.text(), "a quorum of 1 shows no count"
                result = alice.submit(page)
                assert result.status == 200, result.text()
                assert f"version 1 approved for {env}" in result.text()
            record = world.parameter(env, group)
            assert record["model_package_group"] == group
            assert record["model_package_arn"] == arns[model.name]
            assert world.describe(arns[model.name])["CustomerMetadataProperties"][env] == APPROVED
            if CHAIN.next(env) is None:
                assert world.envs[env].post_inference_services is None, "the last environment has nobody to ask"
                continue
            outcome = world.post_inference(env, inference_completed(env, arns[model.name], run=f"{group}-{env}"))
            assert outcome["requested"] is True, outcome
        assert world.deliver_promotions() == (2 if CHAIN.next(env) else 0)

    # Histories never mix: each group's entries are its own, in every environment.
    for env in CHAIN:
        energy = world.history(env, ENERGY.model_package_group)
        churn = world.history(env, CHURN.model_package_group)
        assert {e.model_package_group for e in energy} == {ENERGY.model_package_group}
        assert {e.model_package_group for e in churn} == {CHURN.model_package_group}
        assert {e.model for e in energy} == {ENERGY.name}
        assert {e.model for e in churn} == {CHURN.name}
        assert len(energy) == 1
        assert len(churn) == (2 if env == quorum_env else 1)
    counted, deciding = world.history(quorum_env, CHURN.model_package_group)
    assert (counted.state, counted.progress, counted.decided_by) == (PENDING, "1 of 2", "alice@example.com")
    assert (deciding.state, deciding.progress, deciding.decided_by) == (APPROVED, "2 of 2", "dave@example.com")


def decide_with_quorum(world, env: str, arn: str, sent) -> None:
    """churn in its quorum-2 environment: alice counts, bob (registrant) and alice again are refused, dave decides."""
    group = CHURN.model_package_group
    by_recipient = {recipient: mail for mail in sent for recipient in mail.recipients}
    first_link, second_link = (by_recipient[r].links()["approve"] for r in CHURN.environments[env].approvers.emails)

    alice = ApproverBrowser("alice")
    page = alice.open(first_link)
    assert page.status == 200, page.text()
    assert "Approvals: 0 of 2 approvals so far." in page.text()
    counted = alice.submit(page)
    assert counted.status == 200, counted.text()
    assert "1 of 2 approvals: alice@example.com" in counted.text()
    assert f"1 more approver needed before version 1 moves into {env}" in counted.text()
    assert world.parameter(env, group) is None, "one approval of two moves nothing"
    assert world.describe(arn)["CustomerMetadataProperties"][env] == PENDING

    before = world.snapshot(arn)
    bob = ApproverBrowser("bob").open(second_link)
    assert bob.status == 403, "the registrant never counts"
    assert "You registered this model version" in bob.text()
    again = ApproverBrowser("alice").open(second_link)
    assert again.status == 409
    assert f"already approved {group} version 1 for {env}; 1 more approver needed" in again.text()
    assert world.snapshot(arn) == before, "refusals change nothing"

    dave = ApproverBrowser("dave")
    page = dave.open(second_link)
    assert "Approvals: 1 of 2 approvals: alice@example.com." in page.text()
    assert "yours completes the quorum" in page.text()
    result = dave.submit(page)
    assert result.status == 200, result.text()
    assert f"version 1 approved for {env}" in result.text()
    assert "2 of 2 approvals: alice@example.com, dave@example.com" in result.text()
    record = world.parameter(env, group)
    assert record["approved_by"] == "alice@example.com, dave@example.com"
    # alice, back on her own link, sees her counted approval and that the quorum is complete (not a refusal).
    back = ApproverBrowser("alice").open(first_link)
    assert back.status == 200
    assert "2 of 2 approvals: alice@example.com, dave@example.com: the quorum is complete." in back.text()


def test_a_link_for_a_group_this_environment_does_not_serve_is_refused_with_what_to_do(platform):
    world = platform
    env = world.envs[CHAIN.first]
    token, _ = links.issue(
        env.services.signer,
        request_id="r",
        model_package_group="not-configured",
        model_package_arn=f"arn:aws:sagemaker:{world.region}:{world.account}:model-package/not-configured/1",
        environment=CHAIN.first,
        action=links.APPROVE,
        recipient="ml-approvers@example.com",
        now=env.services.epoch(),
        ttl_seconds=3600,
    )
    page = ApproverBrowser("alice").open(f"{env.api.url}/links/approve?token={token}")
    assert page.status == 404
    text = page.text()
    assert "This link is for a model this environment does not serve" in text
    assert "unknown model package group 'not-configured'; this platform serves: energy-forecast, churn-scores" in text
    assert "What now:" in text


def test_the_cli_names_the_model_and_shows_quorum_progress(platform, capsys, monkeypatch):
    """`--model` by name or group on a config with two models; without it, a usage error listing them."""
    from modelgate.cli import EXIT_OK, EXIT_USAGE, main

    world = platform
    as_operator(monkeypatch, world)
    env = CHAIN.first
    many = ["--config", "config/examples/many-models.yaml"]
    arn = world.register("bob@example.com", EVALUATION, CHURN.model_package_group)
    world.request(env, world.registry_event(arn))
    (mail,) = mails(world, CHURN.name, env)
    alice = ApproverBrowser("alice")
    assert alice.submit(alice.open(mail.links()["approve"])).status == 200
    table = world.envs[env].settings.history_table
    assert main(["history", *many, "--table", table]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "several models; say which with --model: energy-forecast (group energy-forecast), churn" in err
    assert main(["history", *many, "--model", "churn", "--table", table]) == EXIT_OK
    (line,) = capsys.readouterr().out.splitlines()
    assert f"v1  registry->{env}  Approved  alice@example.com" in line
    # An approval counted towards a quorum (as the last environment records it) reads as such.
    (decided,) = world.history(env, CHURN.model_package_group)
    counted = replace(decided, decision_id=decided.decision_id + "x", state=PENDING, progress="1 of 2")
    world.session.client("dynamodb").put_item(**history_put(table, counted))
    assert main(["history", *many, "--model", "churn", "--table", table]) == EXIT_OK
    assert "Counted (1 of 2)  alice@example.com" in capsys.readouterr().out.splitlines()[-1]
    assert main(["approved", *many, "--model", "churn-scores", "--env", env, "--output", "text"]) == EXIT_OK
    assert capsys.readouterr().out.startswith(f"churn-scores v1 is approved for {env} by alice@example.com")
    assert main(["history", *many, "--model", "energy-forecast", "--table", table]) == 3, "histories never mix"
    assert main(["approved", *many, "--model", "churn", "--env", "nowhere"]) == EXIT_USAGE
    assert f"the promotion chain is {' -> '.join(CHAIN)}" in capsys.readouterr().err
