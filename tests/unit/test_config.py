"""Configuration is validated once, at synth time; each error names the file and the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from infra.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config
from modelgate.environments import ENVIRONMENTS

SOURCE = "config/modelgate.yaml"


@pytest.fixture
def raw():
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def error_for(raw) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, SOURCE)
    return str(caught.value)


def test_shipped_config_is_valid_and_defaults_are_merged():
    config = load_config()
    assert list(config.environments) == list(ENVIRONMENTS)
    dev, prod = config.environments["dev"], config.environments["prod"]
    assert dev.serving.instance_type == "ml.g4dn.xlarge"  # overridden
    assert dev.training.instance_type == "ml.g5.xlarge"  # from defaults
    assert prod.approvers.emails == ("ml-approvers@example.com", "ml-leads@example.com")
    assert config.environments["test"].prep.engine == "glue"


def test_config_objects_are_frozen():
    config = load_config()
    with pytest.raises(Exception, match="frozen"):
        config.environments["dev"].training.epochs = 99


@pytest.mark.parametrize(
    ("mutate", "key", "says"),
    [
        (lambda r: r["environments"]["dev"].update(account="12345"), "environments.dev.account", "12-digit"),
        (lambda r: r["environments"]["dev"].update(account=222222222222), "environments.dev.account", "quote"),
        (lambda r: r["environments"]["uat"].update(region="eu-wst-1"), "environments.uat.region", "region"),
        (
            lambda r: r["environments"]["prod"]["serving"].update(instance_type="ml.g5.xxlarge"),
            "environments.prod.serving.instance_type",
            "'ml.g5.xxlarge' is an unknown SageMaker instance type (did you mean 'ml.g5.xlarge'?)",
        ),
        (
            lambda r: r["environments"]["test"].setdefault("training", {}).update(instance_type="ml.m5.xlarge"),
            "environments.test.training.instance_type",
            "'ml.m5.xlarge' has no NVIDIA GPU",
        ),
        (
            lambda r: r["defaults"]["prep"].update(processing_instance_type="ml.q9.huge"),
            "defaults.prep.processing_instance_type",
            "known SageMaker instance type",
        ),
        (lambda r: r["defaults"].pop("sender_email"), "defaults.sender_email", "required value is missing"),
        (
            lambda r: r["defaults"]["api"]["jwt"].update(jwks_url="http://insecure/keys"),
            "defaults.api.jwt.jwks_url",
            "https://",
        ),
        (
            lambda r: r["environments"]["prod"]["serving"].update(min_instances=5, max_instances=2),
            "environments.prod.serving",
            "max_instances (2) is below min_instances (5)",
        ),
        (
            lambda r: r["defaults"]["serving"].update(triton_version="19.01"),
            "environments.dev",
            "serving.triton_version: Triton release '19.01' is not known",
        ),
        (lambda r: r["defaults"]["prep"].update(engine="spark"), "defaults.prep.engine", "'processing'"),
        (lambda r: r["defaults"]["approvers"].update(emails=[]), "defaults.approvers.emails", "at least 1"),
        (
            lambda r: r["defaults"]["approvers"].update(emails=["not-an-email"]),
            "defaults.approvers.emails.0",
            "e-mail",
        ),
        (lambda r: r["defaults"].update(instance_typo="x"), "defaults.instance_typo", "unknown key"),
        (lambda r: r["cicd"].update(connection_arn="arn:aws:s3:::nope"), "cicd.connection_arn", "connection ARN"),
        (lambda r: r["project"].update(model_package_group="bad group!"), "project.model_package_group", "group"),
    ],
)
def test_bad_values_name_the_file_and_the_key(raw, mutate, key, says):
    mutate(raw)
    message = error_for(raw)
    assert f"{SOURCE}: {key}: " in message
    assert says in message


def test_a_bad_shared_default_is_blamed_once_on_the_defaults_key(raw):
    raw["defaults"]["training"]["instance_type"] = "ml.g5.huge"
    message = error_for(raw)
    assert message == (
        f"{SOURCE}: defaults.training.instance_type: 'ml.g5.huge' is an unknown SageMaker instance type"
        " (did you mean 'ml.g5.xlarge'?) (inherited by dev, test, uat, prod)"
    )


def test_unknown_environment_in_file_is_refused(raw):
    raw["environments"]["staging"] = copy.deepcopy(raw["environments"]["uat"])
    assert "environments.staging: unknown environment" in error_for(raw)


def test_missing_environment_is_refused_because_promotion_needs_it(raw):
    del raw["environments"]["uat"]
    assert "environments.uat: required" in error_for(raw)


def test_selector_picks_environments_and_refuses_unknown_names():
    config = load_config()
    assert [e.name for e in config.select(None)] == list(ENVIRONMENTS)
    assert [e.name for e in config.select("dev")] == ["dev"]
    assert [e.name for e in config.select("test,prod")] == ["test", "prod"]
    with pytest.raises(ConfigError, match="unknown environment 'staging'"):
        config.select("staging")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("environments: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r.update(enviroments=r.pop("environments")),
            "enviroments: unknown top-level key (did you mean 'environments'?)",
        ),
        (
            lambda r: r["environments"]["prod"].update(trainig={"epochs": 3}),
            "environments.prod.trainig: unknown key (did you mean 'training'?)",
        ),
        (
            lambda r: r["defaults"]["training"].update(instance_typ="ml.g5.xlarge"),
            "defaults.training.instance_typ: unknown key (did you mean 'instance_type'?) (inherited by dev, test, uat,",
        ),
        (
            lambda r: r["defaults"]["api"]["jwt"].update(audiance="x"),
            "defaults.api.jwt.audiance: unknown key (did you mean 'audience'?)",
        ),
        (
            lambda r: r["environments"].update(prd=r["environments"].pop("prod")),
            "environments.prd: unknown environment (did you mean 'prod'?)",
        ),
    ],
)
def test_misspelt_keys_get_a_did_you_mean(raw, mutate, expected):
    mutate(raw)
    assert f"{SOURCE}: {expected}" in error_for(raw)


def test_a_value_no_environment_has_is_reported_once_at_defaults(raw):
    del raw["defaults"]["sender_email"]
    expected = f"{SOURCE}: defaults.sender_email: required value is missing (set it here or in every environment)"
    assert error_for(raw) == expected
    del raw["defaults"]["approvers"]["group"]  # prod has its own group: the other three need one
    expected = f"{SOURCE}: defaults.approvers.group: required value is missing (dev, test, uat have none of their own)"
    assert expected in error_for(raw)


def test_a_value_missing_in_one_environment_only_is_reported_there(raw):
    del raw["defaults"]["approvers"]["group"]
    for env in ("dev", "test"):
        raw["environments"][env].setdefault("approvers", {})["group"] = "g"
    assert error_for(raw) == (
        f"{SOURCE}: environments.uat.approvers.group: required value is missing (not in defaults either)"
    )
