"""modelgate.serving.settings: what the serving Lambdas are told, refused clearly when the stack got it wrong."""

from __future__ import annotations

import json

import pytest

from modelgate.function_settings import SettingsError
from modelgate.serving import settings as names
from modelgate.serving.settings import InferenceSettings, ServedModel, UnknownServedModel

SERVED = [ServedModel("energy-forecast", "energy-forecast", "ep-1"), ServedModel("churn", "churn-scores", "ep-2")]


def environ(served: str = names.served_models_value(SERVED)) -> dict[str, str]:
    return {names.BUCKET: "bucket", names.ENVIRONMENT: "sandbox", names.SERVED_MODELS: served}


def test_the_served_models_round_trip_and_each_group_names_its_endpoint():
    settings = InferenceSettings.from_environ(environ())
    assert settings.models == tuple(SERVED)
    assert settings.served("churn-scores").endpoint_name == "ep-2"


def test_an_unknown_group_names_every_served_one():
    settings = InferenceSettings.from_environ(environ())
    for group in ("churn", "energy-forecast-eu", None):
        with pytest.raises(UnknownServedModel, match=r"served models: energy-forecast, churn-scores$"):
            settings.served(group)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("not json", "not a JSON list"),
        (json.dumps([{"model": "m", "group": "g"}]), "not a JSON list"),
        ("[]", "each model group once, at least one"),
        (names.served_models_value([SERVED[0], SERVED[0]]), "each model group once"),
        (json.dumps([{"model": "m", "group": "", "endpoint": "e"}]), "each model group once"),
    ],
)
def test_a_malformed_served_models_value_is_a_deployment_error_naming_the_variable(value, fragment):
    with pytest.raises(SettingsError, match=names.SERVED_MODELS) as refused:
        InferenceSettings.from_environ(environ(value))
    assert fragment in str(refused.value)


def test_a_missing_variable_names_who_sets_it():
    with pytest.raises(SettingsError, match=r"MODELGATE_SERVED_MODELS \(the serving stack sets them\)"):
        InferenceSettings.from_environ({names.BUCKET: "b", names.ENVIRONMENT: "e"})


def test_the_environment_size_check_refuses_what_lambda_would_and_says_what_to_do():
    assert names.check_environ_size("f", {"A": "x" * 4095}) == 4096
    with pytest.raises(names.EnvironmentTooLarge, match=r"f: environment variables take 4097 bytes .* split"):
        names.check_environ_size("f", {"A": "x" * 4096})
