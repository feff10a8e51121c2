"""`modelgate` CLI against the same moto world: what CI/CD and people see."""

from __future__ import annotations

import json

import pytest

from modelgate.cli import main
from sandbox.approval import ApproverBrowser
from tests.integration.approval.conftest import ACCOUNT, GROUP, PROJECT, REGION

REGISTRY = ["--registry-account", ACCOUNT, "--registry-region", REGION]


def approve_dev(world, username="alice"):
    arn = world.register()
    world.request("dev", world.registry_event(arn))
    mail = world.emails()[-1]
    browser = ApproverBrowser(username)
    browser.submit(browser.open(mail.links()["approve"]))
    return arn


def test_approved_prints_the_parameter_and_fails_clearly_when_none(world, capsys):
    assert main(["approved", GROUP, "--env", "dev", "--project", PROJECT]) == 1
    assert f"no model of {GROUP} is approved for dev: parameter /{PROJECT}/{GROUP}/dev does not exist" in (
        capsys.readouterr().err
    )
    arn = approve_dev(world)
    assert main(["approved", GROUP, "--env", "dev", "--project", PROJECT]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model_package_arn"] == arn
    assert printed["approved_by"] == "alice@example.com"


def test_approved_refuses_a_corrupted_parameter_and_an_unknown_environment(world, capsys):
    world.session.client("ssm").put_parameter(Name=f"/{PROJECT}/{GROUP}/test", Value="{not json", Type="String")
    assert main(["approved", GROUP, "--env", "test", "--project", PROJECT]) == 1
    assert "not a valid approved-model record" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["approved", GROUP, "--env", "staging", "--project", PROJECT])
    assert exit_.value.code == 2
    assert "unknown environment 'staging'" in capsys.readouterr().err


def test_status_prints_versions_by_environment_with_who_and_when(world, capsys):
    approve_dev(world)
    world.register()
    assert main(["status", GROUP, *REGISTRY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "created", "registered", "by", "dev", "test", "uat", "prod"]
    assert lines[1].split()[0] == "2"
    assert "PendingManualApproval" in lines[1]
    assert lines[2].split()[0] == "1"
    assert "Approved alice@example.com" in lines[2]


def test_request_promotion_checks_the_chain_then_asks_the_target_environment(world, capsys):
    arn = approve_dev(world)
    assert main(["request-promotion", GROUP, "--version", "1", "--to", "uat", *REGISTRY]) == 1
    assert "not approved for test" in capsys.readouterr().err
    assert world.promotion_events() == []
    assert main(["request-promotion", GROUP, "--version", "9", "--to", "test", *REGISTRY]) == 1
    assert "does not exist" in capsys.readouterr().err

    assert main(["request-promotion", GROUP, "--version", "1", "--to", "test", *REGISTRY]) == 0
    assert "the test approvers will receive an e-mail" in capsys.readouterr().out
    (event,) = world.promotion_events()
    assert event["detail"]["model_package_arn"] == arn
    world.request("test", event)
    assert any("test" in m.subject for m in world.emails())


def test_history_lists_decisions_in_order(world, capsys):
    approve_dev(world)
    table = world.envs["dev"].settings.history_table
    assert main(["history", GROUP, "--table", table]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "v1  registry->dev  Approved  alice@example.com" in line
    assert main(["history", "other-group", "--table", table]) == 1


def test_a_version_with_an_unknown_registrant_waits_for_an_administrator(world, capsys):
    """Separation of duties fails closed: nobody may approve until an administrator says who registered it,
    and the record is never overwritten."""
    from modelgate.approval.request_emails import RequestRefused

    arn = world.register(registered_by=None)
    with pytest.raises(RequestRefused, match="set-registrant"):
        world.request("dev", world.registry_event(arn))
    assert main(["set-registrant", GROUP, "--version", "1", "--email", "Bob@Example.com", *REGISTRY]) == 0
    assert main(["set-registrant", GROUP, "--version", "1", "--email", "eve@example.com", *REGISTRY]) == 1
    assert "not changed" in capsys.readouterr().err
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    assert ApproverBrowser("bob").open(mail.links()["approve"]).status == 403
    assert ApproverBrowser("alice").open(mail.links()["approve"]).status == 200


def test_an_administrator_vouches_for_a_typed_registrant_aws_did_not_record(world, capsys):
    """Versions registered before principals were recorded: the administrator confirms the typed registrant,
    never replaces it."""
    arn = world.register(registered_by="bob@example.com")  # no registration event handled: nothing recorded
    assert main(["set-registrant", GROUP, "--version", "1", "--email", "eve@example.com", *REGISTRY]) == 1
    assert "already says it was registered by bob@example.com" in capsys.readouterr().err
    assert main(["set-registrant", GROUP, "--version", "1", "--email", "BOB@example.com", *REGISTRY]) == 0
    metadata = world.describe(arn)["CustomerMetadataProperties"]
    assert metadata["registered_by"] == "bob@example.com"
    assert "recorded by" in metadata["started_by"]
    assert metadata["started_by.names"] == "bob@example.com"
