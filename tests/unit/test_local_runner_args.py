"""`local_runner --register` checks what registering needs before it trains (minutes), not after."""

from __future__ import annotations

import pytest

from pipelines import local_runner


def no_credentials(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_register_without_credentials_fails_before_any_step(monkeypatch, tmp_path, capsys):
    no_credentials(monkeypatch)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)  # the region comes from the config's environment
    monkeypatch.setattr(local_runner, "run_pipeline", lambda *a, **k: pytest.fail("trained before checking"))
    with pytest.raises(SystemExit) as exit_:
        local_runner.main(["--work-dir", str(tmp_path), "--env", "dev", "--register", "--bucket", "b"])
    assert exit_.value.code == 2
    assert "--register needs AWS credentials" in capsys.readouterr().err


def test_register_with_credentials_that_do_not_work_fails_before_any_step(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setattr(local_runner, "run_pipeline", lambda *a, **k: pytest.fail("trained before checking"))
    with pytest.raises(SystemExit) as exit_:
        local_runner.main(["--work-dir", str(tmp_path), "--env", "dev", "--register", "--bucket", "b"])
    assert exit_.value.code == 2
    assert "the AWS credentials do not work in eu-west-1" in capsys.readouterr().err


def test_register_without_registered_by_warns_that_nobody_will_be_asked(monkeypatch, tmp_path, capsys):
    from moto import mock_aws

    seen = {}

    def fake_run(settings, **clients):
        seen.update(settings=settings, clients=clients)
        raise local_runner.LocalStepError("stopped here by the test")

    monkeypatch.setattr(local_runner, "run_pipeline", fake_run)
    with mock_aws():
        code = local_runner.main(["--work-dir", str(tmp_path), "--env", "dev", "--register", "--bucket", "b"])
    assert code == 1
    assert "no approver is e-mailed" in capsys.readouterr().err
    assert set(seen["clients"]) == {"sagemaker", "s3"}
