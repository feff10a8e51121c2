"""`make deploy` warns when the configuration still has the shipped placeholder accounts and addresses."""

from __future__ import annotations

import yaml

from infra.config import DEFAULT_CONFIG_PATH, load_config, parse_config
from infra.placeholders import main, placeholders


def test_the_shipped_config_is_all_placeholders_and_says_so(capsys):
    found = placeholders(load_config(), "prod")
    assert found[0] == "environments.prod.account is 555555555555, a placeholder: put the real AWS account id"
    assert any("example domains" in line for line in found)
    assert main(["prod"]) == 0, "a warning, not a failure"
    assert "WARNING: config/modelgate.yaml: environments.prod.account is 555555555555" in capsys.readouterr().err
    assert main(["prod", "--strict"]) == 1


def test_real_values_pass_quietly(tmp_path, capsys):
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    (dev,) = [environment for environment in raw["environments"] if environment["name"] == "dev"]
    dev["account"] = "482910375561"
    raw["defaults"]["sender_email"] = "mlops@energy.co"
    raw["defaults"]["approvers"]["emails"] = ["ml-team@energy.co"]
    assert placeholders(parse_config(raw, "x.yaml"), "dev") == []
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["dev", "--config", str(path), "--strict"]) == 0
    assert capsys.readouterr().err == ""


def test_a_models_own_approvers_are_checked_too():
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["defaults"]["sender_email"] = "mlops@energy.co"
    raw["defaults"]["approvers"]["emails"] = ["ml-team@energy.co"]
    raw["models"][0]["approvers"] = {"emails": ["someone@example.com"]}
    (found,) = [line for line in placeholders(parse_config(raw, "x.yaml"), "test") if "example domains" in line]
    assert "someone@example.com" in found
