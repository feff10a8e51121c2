"""`modelgate` CLI against the same moto world: what CI/CD and people see, and the exit-code contract
(0 ok, 2 usage, 3 not approved / nothing found, 4 AWS or configuration error)."""

from __future__ import annotations

import json

import pytest

from modelgate.cli import EXIT_AWS, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, approval_stack_name, main
from sandbox.approval import ApproverBrowser
from tests.integration.approval.conftest import ACCOUNT, CHAIN, GROUP, PROJECT, REGION, as_operator

# The tests of one deployed world run together on one pytest-xdist worker (pyproject: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("approval-world-b")

REGISTRY = ["--registry-account", ACCOUNT, "--registry-region", REGION]


@pytest.fixture
def world(world, monkeypatch):
    """The CLI runs as the account's operator (a person, or CI/CD), against the local AWS."""
    as_operator(monkeypatch, world)
    return world


def approve_dev(world, username="alice"):
    arn = world.register()
    world.request("dev", world.registry_event(arn))
    mail = world.emails()[-1]
    browser = ApproverBrowser(username)
    browser.submit(browser.open(mail.links()["approve"]))
    return arn


def test_approved_exits_0_with_json_and_3_when_nothing_is_approved(world, capsys):
    assert main(["approved", GROUP, "--env", "dev", "--project", PROJECT]) == EXIT_NOT_FOUND
    assert f"no model of {GROUP} is approved for dev: parameter /{PROJECT}/{GROUP}/dev does not exist" in (
        capsys.readouterr().err
    )
    assert main(["approved", "--env", "dev", "--output", "json"]) == EXIT_NOT_FOUND  # group and project: config
    assert json.loads(capsys.readouterr().out)["exit_code"] == EXIT_NOT_FOUND, "a JSON reader gets JSON"
    arn = approve_dev(world)
    assert main(["approved", GROUP, "--env", "dev", "--project", PROJECT]) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed["model_package_arn"] == arn
    assert printed["approved_by"] == "alice@example.com"
    assert main(["approved", "--env", "dev", "--output", "text"]) == EXIT_OK
    assert capsys.readouterr().out.startswith(f"{GROUP} v1 is approved for dev by alice@example.com at ")


def test_a_misspelt_group_is_a_usage_error_not_a_silent_not_approved(world, capsys):
    assert main(["approved", "energy-forcast", "--env", "dev"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown model package group 'energy-forcast' (did you mean 'energy-forecast'?)" in err


def test_approved_refuses_a_corrupted_parameter_and_an_unknown_environment(world, capsys):
    world.session.client("ssm").put_parameter(Name=f"/{PROJECT}/{GROUP}/test", Value="{not json", Type="String")
    assert main(["approved", GROUP, "--env", "test", "--project", PROJECT]) == EXIT_AWS
    assert "not a valid approved-model record" in capsys.readouterr().err
    assert main(["approved", GROUP, "--env", "staging", "--project", PROJECT]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown environment 'staging'" in err
    assert f"the promotion chain is {' -> '.join(CHAIN)}" in err, "says which names there are"


def test_no_credentials_and_an_unreachable_endpoint_are_aws_errors(monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["approved", "--env", "dev"]) == EXIT_AWS
    assert "no AWS credentials" in capsys.readouterr().err

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert main(["approved", "--env", "dev"]) == EXIT_AWS
    assert "AWS error: Could not connect to the endpoint URL" in capsys.readouterr().err


def test_a_broken_config_file_is_a_configuration_error(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("environments: [unclosed")
    assert main(["approved", "--env", "dev", "--config", str(broken)]) == EXIT_AWS
    assert "not valid YAML" in capsys.readouterr().err


def test_status_fits_a_ci_log_and_has_a_json_form(world, capsys):
    approve_dev(world)
    world.register()
    assert main(["status", GROUP, *REGISTRY]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "created", "registrant", "dev", "test", "uat", "prod"]
    assert lines[1].split()[:4] == ["2", lines[1].split()[1], "bob", "Pending"]
    assert lines[2].split()[0] == "1"
    assert "Approved alice " in lines[2]
    assert max(len(line) for line in lines) <= 100, lines
    assert main(["status", "--output", "json"]) == EXIT_OK  # group and registry from the config
    document = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in document] == [2, 1]
    assert document[1]["environments"]["dev"]["decided_by"] == "alice@example.com"
    assert document[1]["environments"]["test"]["state"] == "PendingManualApproval"


def test_request_promotion_checks_the_chain_then_asks_the_target_environment(world, capsys):
    arn = approve_dev(world)
    assert main(["request-promotion", GROUP, "--version", "1", "--to", "uat", *REGISTRY]) == EXIT_NOT_FOUND
    assert "not approved for test" in capsys.readouterr().err
    assert world.promotion_events() == []
    assert main(["request-promotion", GROUP, "--version", "9", "--to", "test", *REGISTRY]) == EXIT_NOT_FOUND
    assert "does not exist" in capsys.readouterr().err

    assert main(["request-promotion", GROUP, "--version", "1", "--to", "test", *REGISTRY]) == EXIT_OK
    assert f"the test approvers of {GROUP} will receive an e-mail" in capsys.readouterr().out
    (event,) = world.promotion_events()
    assert event["detail"]["model_package_arn"] == arn
    world.request("test", event)
    assert any("test" in m.subject for m in world.emails())


def deploy_history_output(world, env: str) -> str:
    """The deployed approval stack's HistoryTable output (what the CLI looks up), as `cdk deploy` leaves it."""
    table = world.envs[env].settings.history_table
    (stack,) = world.session.client("cloudformation").describe_stacks(StackName=approval_stack_name(PROJECT, env))[
        "Stacks"
    ]
    assert {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}["HistoryTable"] == table
    return table


def test_history_finds_its_table_from_the_stack_and_lists_decisions_in_order(world, capsys):
    approve_dev(world)
    table = deploy_history_output(world, "dev")
    capsys.readouterr()  # the functions' own log lines, not the CLI's output
    assert main(["history", "--env", "dev"]) == EXIT_OK
    (line,) = capsys.readouterr().out.splitlines()
    assert "v1  registry->dev  Approved  alice@example.com" in line
    assert main(["history", "--env", "dev", "--output", "json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["decided_by"] == "alice@example.com"
    assert main(["history", GROUP, "--table", table, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["to_environment"] == "dev"
    assert main(["history", "--env", "dev", "--version", "7"]) == EXIT_NOT_FOUND
    assert "no decisions recorded" in capsys.readouterr().err
    assert main(["history", "--env", "test", "--project", "elsewhere"]) == EXIT_AWS  # no such stack deployed
    assert f"stack {approval_stack_name('elsewhere', 'test')}" in capsys.readouterr().err
    assert main(["history", "--table", "no-such-table"]) == EXIT_AWS
    assert "history table no-such-table does not exist" in capsys.readouterr().err
    assert main(["history"]) == EXIT_USAGE


@pytest.mark.parametrize("command", ["status", "approved", "request-promotion", "history"])
def test_help_shows_examples_and_the_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert "examples:\n  modelgate " in shown
    assert "3  not approved / nothing found" in shown
    assert "4  AWS or configuration error" in shown


def test_a_version_with_an_unknown_registrant_waits_for_an_administrator(world, capsys):
    """Separation of duties fails closed: nobody may approve until an administrator says who registered it,
    and the record is never overwritten."""
    from modelgate.approval.request_emails import RequestRefused

    arn = world.register(registered_by=None)
    with pytest.raises(RequestRefused, match="set-registrant"):
        world.request("dev", world.registry_event(arn))
    assert main(["set-registrant", GROUP, "--version", "1", "--email", "Bob@Example.com", *REGISTRY]) == EXIT_OK
    assert main(["set-registrant", GROUP, "--version", "1", "--email", "eve@example.com", *REGISTRY]) == EXIT_NOT_FOUND
    assert "not changed" in capsys.readouterr().err
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    assert ApproverBrowser("bob").open(mail.links()["approve"]).status == 403
    assert ApproverBrowser("alice").open(mail.links()["approve"]).status == 200


def test_an_administrator_vouches_for_a_typed_registrant_aws_did_not_record(world, capsys):
    """Versions registered before principals were recorded: the administrator confirms the typed registrant,
    never replaces it."""
    arn = world.register(registered_by="bob@example.com")  # no registration event handled: nothing recorded
    assert main(["set-registrant", GROUP, "--version", "1", "--email", "eve@example.com", *REGISTRY]) == EXIT_NOT_FOUND
    assert "already says it was registered by bob@example.com" in capsys.readouterr().err
    assert main(["set-registrant", GROUP, "--version", "1", "--email", "BOB@example.com", *REGISTRY]) == EXIT_OK
    metadata = world.describe(arn)["CustomerMetadataProperties"]
    assert metadata["registered_by"] == "bob@example.com"
    assert "recorded by" in metadata["started_by"]
    assert metadata["started_by.names"] == "bob@example.com"
