"""Issue 12, problem 1: the Triton endpoint runs on a SageMaker host whose NVIDIA driver is new enough.

SageMaker's default GPU host for ml.g4dn/ml.g5 has driver 470 (CUDA 11.4); Triton 23.12+ needs CUDA 12/13.
"""

from __future__ import annotations

import pytest
import yaml

from infra.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config
from infra.gpu_hosts import (
    AMIS_BY_NAME,
    INFERENCE_AMIS,
    TRITON_CUDA,
    NoCompatibleHostError,
    inference_ami,
    minimum_driver,
)
from infra.instance_types import GPU_FAMILIES
from infra.triton_images import RELEASES

SAGEMAKER_DEFAULT_DRIVER = {"g4dn": 470, "g5": 470, "p3": 470, "p4d": 470, "p4de": 470}


def test_every_known_triton_release_has_a_cuda_and_driver_entry():
    assert set(RELEASES) == set(TRITON_CUDA)


def test_the_ami_names_are_the_values_sagemaker_accepts():
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    accepted = set(model.shape_for("ProductionVariantInferenceAmiVersion").enum)
    assert set(AMIS_BY_NAME) <= accepted


@pytest.mark.parametrize("family", ["g4dn", "g5"])
def test_triton_25_09_on_g4dn_and_g5_gets_the_al2023_driver_580_host(family):
    ami = inference_ami("25.09", f"ml.{family}.xlarge")
    assert ami == "al2023-ami-sagemaker-inference-gpu-4-1"
    assert AMIS_BY_NAME[ami].driver >= minimum_driver("25.09") > SAGEMAKER_DEFAULT_DRIVER[family]


@pytest.mark.parametrize("release", sorted(TRITON_CUDA))
@pytest.mark.parametrize("family", sorted(GPU_FAMILIES))
def test_a_chosen_host_always_has_the_driver_the_release_needs(release, family):
    instance = f"ml.{family}.{GPU_FAMILIES[family][0]}"
    try:
        ami, refusal = inference_ami(release, instance), ""
    except NoCompatibleHostError as error:
        ami, refusal = None, str(error)
    if ami is None:
        assert instance in refusal or f"ml.{family}" in refusal, "a refusal names the instance type or family"
        return
    chosen = AMIS_BY_NAME[ami]
    assert chosen.driver >= minimum_driver(release)
    assert family in chosen.families


def test_cuda_13_refuses_volta_whatever_the_driver():
    with pytest.raises(NoCompatibleHostError, match=r"compute capability 7\.0, needs 7\.5"):
        inference_ami("25.09", "ml.p3.2xlarge")


def test_a_requested_ami_with_an_old_driver_is_refused_with_the_reason():
    with pytest.raises(NoCompatibleHostError, match=r"driver 550; Triton 25\.09 .* needs 580"):
        inference_ami("25.09", "ml.g5.xlarge", "al2-ami-sagemaker-inference-gpu-3-1")
    assert inference_ami("24.05", "ml.g5.xlarge", "al2-ami-sagemaker-inference-gpu-3-1").endswith("3-1")


def test_newest_first():
    assert [ami.driver for ami in INFERENCE_AMIS] == sorted((ami.driver for ami in INFERENCE_AMIS), reverse=True)


def test_the_shipped_config_runs_every_endpoint_on_a_compatible_host():
    for env in load_config().environments.values():
        ami = AMIS_BY_NAME[env.serving.host_ami]
        assert ami.driver >= minimum_driver(env.serving.triton_version), env.name


def _env(raw, name: str) -> dict:
    return next(item for item in raw["environments"] if item["name"] == name)


def _error(raw) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "config/modelgate.yaml")
    return str(caught.value)


def test_config_without_a_compatible_host_fails_at_synth_naming_the_key():
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    _env(raw, "uat")["serving"] = {"instance_type": "ml.p3.2xlarge"}
    message = _error(raw)
    assert "environments.uat: serving.triton_version:" in message
    assert "ml.p3.2xlarge" in message


def test_config_with_an_incompatible_requested_ami_names_that_key():
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    _env(raw, "dev")["serving"]["inference_ami_version"] = "al2-ami-sagemaker-inference-gpu-2"
    message = _error(raw)
    assert "environments.dev: serving.inference_ami_version:" in message
    assert "needs 580" in message
