"""Configuration is validated once, at synth time; each error names the file and the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from infra.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config

SOURCE = "config/modelgate.yaml"


@pytest.fixture
def raw():
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


CHAIN = ("dev", "test", "uat", "prod")  # the shipped file's chain, checked below


def env(raw, name: str) -> dict:
    """The named environment's document in the chain list."""
    return next(item for item in raw["environments"] if item["name"] == name)


def error_for(raw) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, SOURCE)
    return str(caught.value)


def test_shipped_config_is_valid_and_defaults_are_merged():
    config = load_config()
    assert list(config.environments) == list(CHAIN) == list(config.chain)
    dev, prod = config.environments["dev"], config.environments["prod"]
    assert dev.serving.instance_type == "ml.g4dn.xlarge"  # overridden
    assert dev.training.instance_type == "ml.g5.xlarge"  # from defaults
    assert prod.approvers.emails == ("ml-approvers@example.com", "ml-leads@example.com")
    assert config.environments["test"].prep.engine == "glue"


def test_config_objects_are_frozen():
    config = load_config()
    with pytest.raises(Exception, match="frozen"):
        config.environments["dev"].training.max_runtime_minutes = 99


@pytest.mark.parametrize(
    ("mutate", "key", "says"),
    [
        (lambda r: env(r, "dev").update(account="12345"), "environments.dev.account", "12-digit"),
        (lambda r: env(r, "dev").update(account=222222222222), "environments.dev.account", "quote"),
        (lambda r: env(r, "uat").update(region="eu-wst-1"), "environments.uat.region", "region"),
        (
            lambda r: env(r, "prod")["serving"].update(instance_type="ml.g5.xxlarge"),
            "environments.prod.serving.instance_type",
            "'ml.g5.xxlarge' is an unknown SageMaker instance type (did you mean 'ml.g5.xlarge'?)",
        ),
        (
            lambda r: env(r, "test").setdefault("training", {}).update(instance_type="ml.m5.xlarge"),
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
            lambda r: env(r, "prod")["serving"].update(min_instances=5, max_instances=2),
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
        (
            lambda r: r["models"][0].update(model_package_group="bad group!"),
            "models.energy-forecast.model_package_group",
            "group",
        ),
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


def test_the_chain_is_the_list_in_order_with_any_names_and_any_length(raw):
    raw["environments"] = [
        {**env(raw, "prod"), "name": "live"},
        {**env(raw, "dev"), "name": "lab"},
    ]
    config = parse_config(raw, SOURCE)
    assert list(config.chain) == ["live", "lab"]
    assert config.chain.first == "live"
    assert config.chain.next("live") == "lab"
    assert config.chain.next("lab") is None
    raw["environments"] = raw["environments"][:1]
    assert list(parse_config(raw, SOURCE).chain) == ["live"]


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda r: r.update(environments=[]), "environments: required: the promotion chain"),
        (lambda r: r["environments"].append(copy.deepcopy(env(r, "uat"))), "environment 'uat' appears twice"),
        (lambda r: env(r, "uat").pop("name"), "environments[2]: each environment needs a `name`"),
        (lambda r: env(r, "uat").update(name="UAT env"), "environments.UAT env.name: must be 1-16 lowercase"),
    ],
)
def test_a_bad_chain_is_refused(raw, mutate, says):
    mutate(raw)
    assert says in error_for(raw)


def test_the_mapping_form_of_earlier_releases_still_reads_in_its_order(raw):
    chain = {item.pop("name"): item for item in raw.pop("environments")}
    raw["environments"] = chain
    raw["project"]["model_package_group"] = raw.pop("models")[0]["model_package_group"]
    config = parse_config(raw, SOURCE)
    assert list(config.chain) == list(CHAIN)
    assert [(m.name, m.model_package_group) for m in config.models] == [("energy-forecast", "energy-forecast")]
    assert config.environments["prod"].approvers.group == "modelgate-approvers-prod"


def test_a_model_overrides_in_order_defaults_environment_model_model_environment(raw):
    raw["defaults"]["training"]["max_runtime_minutes"] = 300
    env(raw, "dev").setdefault("training", {})["max_runtime_minutes"] = 100
    raw["models"].append(
        {
            "name": "churn",
            "model_package_group": "churn-scores",
            "training": {"max_runtime_minutes": 50},
            "environments": {"prod": {"training": {"max_runtime_minutes": 30}, "approvers": {"quorum": 2}}},
        }
    )
    config = parse_config(raw, SOURCE)
    energy, churn = config.models
    assert [energy.environments[e].training.max_runtime_minutes for e in CHAIN] == [100, 300, 300, 300]
    assert [churn.environments[e].training.max_runtime_minutes for e in CHAIN] == [50, 50, 50, 30]
    assert [churn.environments[e].approvers.quorum for e in CHAIN] == [1, 1, 1, 2]
    assert churn.environments["prod"].approvers.group == "modelgate-approvers-prod"  # the environment's, merged
    assert config.model("churn-scores") is churn
    assert config.model("churn") is churn


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"name": "churn", "model_package_group": "energy-forecast"}, "models.churn.model_package_group: 'energy"),
        ({"name": "energy-forecast", "model_package_group": "x"}, "models.energy-forecast.name: 'energy-forecast' is"),
        ({"name": "churn", "model_package_group": "c", "account": "1"}, "models.churn.account: unknown key (allowed"),
        ({"name": "churn", "model_package_group": "c", "trainig": {}}, "models.churn.trainig: unknown key (did you"),
        (
            {"name": "churn", "model_package_group": "c", "environments": {"prd": {}}},
            "models.churn.environments.prd: not in the promotion chain (did you mean 'prod'?)",
        ),
        (
            {"name": "churn", "model_package_group": "c", "environments": {"prod": {"api": {}}}},
            "models.churn.environments.prod.api: unknown key",
        ),
        (
            {"name": "churn", "model_package_group": "c", "environments": {"prod": {"approvers": {"quorum": 0}}}},
            "models.churn.environments.prod.approvers.quorum: Input should be greater than or equal to 1",
        ),
        (
            {"name": "churn", "model_package_group": "c", "training": {"max_runtime_minutes": 0}},
            "models.churn.training.max_runtime_minutes: Input should be greater than or equal to 10",
        ),
        ({"name": "Churn!", "model_package_group": "c"}, "models.Churn!.name: must be 2-31 lowercase"),
    ],
)
def test_a_bad_model_names_its_key(raw, model, says):
    raw["models"].append(model)
    assert says in error_for(raw)


def test_models_are_required_and_the_old_and_new_group_keys_do_not_mix(raw):
    models = raw.pop("models")
    assert "models: required: a list of models" in error_for(raw)
    raw["models"] = models
    raw["project"]["model_package_group"] = "energy-forecast"
    assert "project.model_package_group: remove it" in error_for(raw)


def test_model_lookup_refuses_unknown_names_with_a_hint():
    config = load_config()
    with pytest.raises(ConfigError, match=r"unknown model 'energy-forecst' \(did you mean 'energy-forecast'\?\)"):
        config.model("energy-forecst")


def test_the_many_models_example_reads():
    config = load_config(DEFAULT_CONFIG_PATH.parent / "examples" / "many-models.yaml")
    assert list(config.chain) == ["sandbox", "staging", "prod"]
    churn = config.model("churn")
    assert churn.model_package_group == "churn-scores"
    assert [churn.environments[e].approvers.quorum for e in config.chain] == [1, 1, 2]
    assert config.model("energy-forecast").environments["prod"].approvers.quorum == 1
    assert [e.manual_approval for e in config.environments.values()] == [False, False, True]


def test_selector_picks_environments_and_refuses_unknown_names():
    config = load_config()
    assert [e.name for e in config.select(None)] == list(CHAIN)
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
            lambda r: env(r, "prod").update(trainig={"instance_count": 3}),
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
    for name in ("dev", "test"):
        env(raw, name).setdefault("approvers", {})["group"] = "g"
    assert error_for(raw) == (
        f"{SOURCE}: environments.uat.approvers.group: required value is missing (not in defaults either)"
    )


def test_training_epochs_still_synthesizes_with_a_warning_to_remove_it(raw):
    """`training.epochs` did nothing since the closed-form fit: it is no knob any more. An old config that sets it
    is accepted, with one warning per place it is set, saying why and what to do; the settings carry no epochs."""
    from infra.config import ConfigDeprecationWarning

    raw["defaults"]["training"]["epochs"] = 30
    env(raw, "dev").setdefault("training", {})["epochs"] = 10
    raw["models"][0]["environments"] = {"prod": {"training": {"epochs": 3}}}
    with pytest.warns(ConfigDeprecationWarning) as warned:
        config = parse_config(raw, SOURCE)
    messages = [str(w.message) for w in warned if issubclass(w.category, ConfigDeprecationWarning)]
    assert messages == [
        f"{SOURCE}: {where}training.epochs has no effect since the closed-form fit (pipelines/steps/forecaster.py: "
        "one pass, no epochs); remove it"
        for where in ("defaults.", "environments.dev.", "models.energy-forecast.environments.prod.")
    ]
    assert not hasattr(config.environments["dev"].training, "epochs")
    assert raw["defaults"]["training"]["epochs"] == 30, "the caller's document is left as it was"


def test_the_shipped_configs_set_no_deprecated_key():
    import warnings

    from infra.config import ConfigDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigDeprecationWarning)
        for path in ("config/modelgate.yaml", "config/examples/many-models.yaml"):
            load_config(path)
