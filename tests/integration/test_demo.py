"""`make demo --auto-approve` end to end: a version of each of two model groups goes from the pipeline through the
whole chain and every stand-in, and the local world ends in the state the real one would: approved in every
environment in the registry and in Parameter Store, one decision per environment in each group's history (two
approvals where the second group's quorum is 2), the e-mails sent, forecasts served with a JWT and a 401
without one; and nothing the demo started is left running."""

from __future__ import annotations

import email
import email.policy
import itertools
import math
import os
from pathlib import Path

import pytest

from demo.__main__ import parser, run
from demo.lifecycle import DemoSettings, Lifecycle
from infra.config import load_config
from sandbox import lambda_zygote

CHAIN = load_config().chain
ENVIRONMENTS = CHAIN.names


def _children() -> list[str]:
    """Processes whose parent is this one (Lambda workers, Triton, pipeline steps...)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(stat.parent.name)
    return found


@pytest.mark.slow
@pytest.mark.minutes
def test_make_demo_auto_approve_end_to_end(tmp_path):
    """One run of the demo (minutes: two syntheses, the pipeline, four approvals) checked from every side."""
    before = set(_children())
    args = parser().parse_args(
        ["--auto-approve", "--outdir", str(tmp_path / "cdk.out"), "--workdir", str(tmp_path / "run")]
    )
    outcome = run(args)
    outcome.leftover_processes = (set(_children()) - before) | set(map(str, lambda_zygote.running()))
    _approved_everywhere_in_the_registry_and_in_parameter_store(outcome)
    _each_environment_recorded_its_decision_in_its_history(outcome)
    _the_second_group_went_the_same_way_with_two_approvers_where_its_quorum_is_two(outcome)
    _the_approvers_were_emailed_and_the_outbox_holds_the_messages(outcome)
    _every_environment_served_forecasts_with_a_jwt_and_refused_a_call_without_one(outcome)
    _every_event_reached_a_handler_that_succeeded_and_nothing_is_left_running(outcome)
    assert outcome.iam_denials == [], "every function and job ran as its own role with the grants it needs"
    _an_interrupted_demo_stops_every_process_it_started(tmp_path / "run", tmp_path / "interrupted")


def _approved_everywhere_in_the_registry_and_in_parameter_store(outcome):
    arn = outcome.model_package_arn
    assert outcome.registry_status == "Approved"
    chain = [None, *ENVIRONMENTS[:-1]]
    for env, source in zip(ENVIRONMENTS, chain, strict=True):
        approved = outcome.parameters[env]
        assert approved is not None, f"no approved model recorded for {env}"
        assert (approved.model_package_arn, approved.model_version, approved.environment) == (arn, 1, env)
        assert approved.source_environment == source
        assert approved.approved_by == ("dave@example.com" if env == CHAIN.last else "alice@example.com")
        assert approved.model_data_url == outcome.pipeline.model_data_url
    table = next(iter(outcome.models.values())).status_table  # the first model's (the demo prints one per model)
    (row,) = [line for line in table.splitlines() if line.startswith("1 ")]
    assert row.count("Approved") == len(ENVIRONMENTS), table
    assert row.split()[2] == "bob", "who registered the version (the status table shows names, to fit a CI log)"
    assert len(row) <= 120, row


def _each_environment_recorded_its_decision_in_its_history(outcome):
    assert outcome.history == dict.fromkeys(ENVIRONMENTS, 1)


def _the_second_group_went_the_same_way_with_two_approvers_where_its_quorum_is_two(outcome):
    first, second = outcome.models.values()
    assert first.group != second.group
    assert second.registry_status == "Approved"
    for env in ENVIRONMENTS:
        approved = second.parameters[env]
        assert (approved.model_package_group, approved.model_package_arn) == (second.group, second.model_package_arn)
        assert first.parameters[env].model_package_group == first.group, "the groups' records never mix"
    assert second.parameters[CHAIN.last].approved_by == "dave@example.com, erin@example.com"
    assert second.history == {**dict.fromkeys(ENVIRONMENTS, 1), CHAIN.last: 2}, "one counted approval, one deciding"
    assert second.environments[CHAIN.last].forecasts, "the second group served forecasts too"


def _the_approvers_were_emailed_and_the_outbox_holds_the_messages(outcome):
    subjects = [mail.subject for mail in outcome.emails]
    assert any(f"for {CHAIN.first}?" in subject for subject in subjects)
    for source, target in itertools.pairwise(ENVIRONMENTS):
        assert any(f"from {source} to {target}?" in subject for subject in subjects), subjects
    prod = [mail for mail in outcome.emails if f"to {CHAIN.last}?" in mail.subject]
    assert {r for mail in prod for r in mail.recipients} == {"ml-approvers@example.com", "ml-leads@example.com"}
    assert len(outcome.outbox) == len(outcome.emails)
    for path in outcome.outbox:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert "/links/approve?token=" in message.get_body(preferencelist=("plain",)).get_content()


def _every_environment_served_forecasts_with_a_jwt_and_refused_a_call_without_one(outcome):
    first = outcome.environments[CHAIN.first].forecasts
    assert len(first) == 3
    for env in ENVIRONMENTS:
        served = outcome.environments[env]
        assert served.unauthorized_status == 401
        assert served.health["model_version"] == 1
        assert (served.deployed["model_version"], served.deployed["copied"]) == (1, 24), served.deployed
        for customer, forecast in served.forecasts.items():
            assert len(forecast) == 24
            assert all(math.isfinite(value) and value >= 0 for value in forecast), (env, customer, forecast)
        assert served.forecasts, f"{env} served forecasts"
        for customer, forecast in served.forecasts.items():  # later environments forecast one customer
            assert forecast == first[customer], "the same approved version answers the same in every environment"


def _every_event_reached_a_handler_that_succeeded_and_nothing_is_left_running(outcome):
    assert outcome.deliveries, "events were delivered through the templates' rules"
    assert [d for d in outcome.deliveries if d.error is not None] == []
    handlers = {d.subscription.function.split("Function")[0] for d in outcome.deliveries}
    assert {"RequestApproval", "PostInference"} <= handlers
    assert sum(name.endswith("DeploymentDeploy") for name in handlers) == len(outcome.models), "one per model"
    assert outcome.pipeline.plot.is_file()
    assert outcome.leftover_processes == set()


def _an_interrupted_demo_stops_every_process_it_started(run_dir: Path, tmp_path: Path):
    """Ctrl-C once Triton, the local servers and the stand-ins run: all of them are gone afterwards."""
    seen: list[str] = []

    def say(line: str) -> None:
        seen.append(line)
        if "EventBridge:" in line:  # every stand-in has started: Triton, gateways, issuer, endpoints
            assert _children(), "Triton runs at this point"
            raise KeyboardInterrupt

    before = set(_children())
    settings = DemoSettings(workdir=tmp_path, assembly=run_dir / "cdk.out", auto_approve=True)
    with pytest.raises(KeyboardInterrupt):
        Lifecycle(load_config(run_dir / "config.yaml"), settings, say=say).run()
    assert set(_children()) - before == set()
    assert lambda_zygote.running() == [], "Lambda workers forked from the zygote are stopped too"
    assert any("EventBridge:" in line for line in seen)
