"""modelgate.serving.settings: what the serving Lambdas are told, refused clearly when the stack got it wrong."""

from __future__ import annotations

import json
import re

import pytest

from modelgate.function_settings import TASK_ROOT, SettingsError
from modelgate.serving import settings as names
from modelgate.serving.settings import InferenceSettings, ServedModel, UnknownServedModel

SERVED = [ServedModel("energy-forecast", "energy-forecast", "ep-1"), ServedModel("churn", "churn-scores", "ep-2")]


@pytest.fixture
def environ(tmp_path):
    """environ(file text) -> the invoke function's environment, its code package holding that served-models file
    (None: no file)."""

    def build(served: str | None = names.served_models_value(SERVED)) -> dict[str, str]:
        package = tmp_path / "package"
        package.mkdir(exist_ok=True)
        if served is not None:
            (package / names.SERVED_MODELS_FILE).write_text(served)
        return {names.BUCKET: "bucket", names.ENVIRONMENT: "sandbox", TASK_ROOT: str(package)}

    return build


def test_the_served_models_round_trip_and_each_group_names_its_endpoint(environ):
    settings = InferenceSettings.from_environ(environ())
    assert settings.models == tuple(SERVED)
    assert settings.served("churn-scores").endpoint_name == "ep-2"


def test_the_served_models_are_read_from_the_code_package_not_the_environment(environ):
    """Lambda caps a function's environment at 4 KB; the list ships in the package, however many models."""
    many = [ServedModel(f"model-{i:03d}", f"group-{i:03d}", f"ep-{'x' * 56}-{i:03d}") for i in range(600)]
    files = names.served_models_files(many)
    assert list(files) == [names.SERVED_MODELS_FILE]
    assert len(files[names.SERVED_MODELS_FILE]) > 40_000
    environment = environ(files[names.SERVED_MODELS_FILE])
    assert names.check_environ_size("invoke", environment) < 200
    assert InferenceSettings.from_environ(environment).models == tuple(many)


def test_an_unknown_group_names_every_served_one(environ):
    settings = InferenceSettings.from_environ(environ())
    for group in ("churn", "energy-forecast-eu", None):
        with pytest.raises(UnknownServedModel, match=r"served models: energy-forecast, churn-scores$"):
            settings.served(group)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("not json", "not a readable JSON file"),
        (json.dumps({"model": "m"}), "not a JSON list"),
        (json.dumps([{"model": "m", "group": "g"}]), "not a JSON list"),
        ("[]", "each model group once, at least one"),
        (names.served_models_value([SERVED[0], SERVED[0]]), "each model group once"),
        (json.dumps([{"model": "m", "group": "", "endpoint": "e"}]), "each model group once"),
        (json.dumps([{"model": "m", "group": "g", "endpoint": ""}]), "its endpoint's name"),
    ],
)
def test_a_malformed_served_models_file_is_a_deployment_error_naming_the_file(environ, value, fragment):
    with pytest.raises(SettingsError, match=names.SERVED_MODELS_FILE) as refused:
        InferenceSettings.from_environ(environ(value))
    assert fragment in str(refused.value)
    assert "redeploy" in str(refused.value) or "once" in str(refused.value) or "endpoint" in str(refused.value)


def test_a_missing_file_or_code_directory_names_who_ships_it(environ):
    with pytest.raises(SettingsError, match=rf"{names.SERVED_MODELS_FILE} is missing: the serving stack ships"):
        InferenceSettings.from_environ(environ(None))
    without_root = {k: v for k, v in environ().items() if k != TASK_ROOT}
    with pytest.raises(SettingsError, match=rf"{TASK_ROOT} is not set"):
        InferenceSettings.from_environ(without_root)


def test_a_missing_variable_names_who_sets_it():
    with pytest.raises(SettingsError, match=r"MODELGATE_ENVIRONMENT \(the serving stack sets them\)"):
        InferenceSettings.from_environ({names.BUCKET: "b"})


def test_the_environment_size_check_refuses_what_lambda_would_and_says_what_to_do():
    assert names.check_environ_size("f", {"A": "x" * 4095}) == 4096
    with pytest.raises(names.EnvironmentTooLarge, match=r"f: environment variables take 4097 bytes .* shorten"):
        names.check_environ_size("f", {"A": "x" * 4096})


def test_endpoint_names_are_readable_unique_and_within_sagemakers_63_characters():
    from infra.constructs.triton_endpoint import endpoint_name

    name = endpoint_name("modelgate-staging-Serving", "energy-forecast", "0123456789abcdef")
    assert name == "modelgate-staging-Serving-energy-forecast-01234567"
    long = endpoint_name("a-project-name-of-some-length-prod-Serving", "a-model-package-group-name" * 3, "fedcba98")
    assert len(long) == names.ENDPOINT_NAME_MAX
    assert long.endswith("-fedcba98")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", long), "SageMaker's EndpointName pattern"
