"""Which stage owns the account-level settings when environments share an AWS account (stacks/topology.py)."""

from __future__ import annotations

import pytest
import yaml

from infra.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config
from stacks.topology import Topology, api_gateway_account_owner

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names


def config_with(**placements: tuple[str, str]):
    """The shipped config with some environments moved: name=(account, region)."""
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for name, (account, region) in placements.items():
        (environment,) = [environment for environment in raw["environments"] if environment["name"] == name]
        environment.update(account=account, region=region)
    return parse_config(raw, "test.yaml")


def owners(config) -> dict[str, str]:
    return {env: api_gateway_account_owner(config, env) for env in ENVIRONMENTS}


def test_every_environment_in_its_own_account_owns_its_api_gateway_settings():
    config = config_with()
    assert owners(config) == {env: env for env in ENVIRONMENTS}
    assert all(Topology.from_config(config, env).owns_api_gateway_account for env in ENVIRONMENTS)


def test_environments_sharing_an_account_and_region_leave_it_to_the_first_of_the_promotion_chain():
    shared = ("222222222222", "eu-west-1")
    config = config_with(dev=shared, test=shared, uat=shared)
    assert owners(config) == {"dev": "dev", "test": "dev", "uat": "dev", "prod": "prod"}
    owning = [env for env in ENVIRONMENTS if Topology.from_config(config, env).owns_api_gateway_account]
    assert owning == ["dev", "prod"]


def test_the_setting_is_per_region_so_one_account_in_two_regions_has_two_owners():
    config = config_with(test=("444444444444", "eu-central-1"), uat=("444444444444", "eu-west-1"))
    assert owners(config)["test"] == "test"
    assert owners(config)["uat"] == "uat"
    config = config_with(test=("444444444444", "eu-west-1"), uat=("444444444444", "eu-west-1"))
    assert (owners(config)["test"], owners(config)["uat"]) == ("test", "test")


def test_a_standalone_environment_owns_its_settings():
    config = config_with()
    assert Topology.standalone(config.environments["uat"]).owns_api_gateway_account


def test_an_unknown_environment_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown environment 'staging'"):
        api_gateway_account_owner(config_with(), "staging")


def test_neighbours_come_from_the_chain_whatever_its_names():
    """Issue 13: the chain of config/examples/many-models.yaml (sandbox -> staging -> prod) has no name of the
    shipped config; the first environment holds the registry, each one's neighbours are the chain's."""
    config = load_config("config/examples/many-models.yaml")
    sandbox, staging, prod = (Topology.from_config(config, env) for env in ("sandbox", "staging", "prod"))
    first = config.environments["sandbox"]
    assert {(t.registry_account, t.registry_region) for t in (sandbox, staging, prod)} == {
        (first.account, first.region)
    }
    assert [t.holds_registry(config.environments[e]) for t, e in ((sandbox, "sandbox"), (staging, "staging"))] == [
        True,
        False,
    ]
    assert (sandbox.previous_account, staging.previous_account) == (None, first.account)
    assert staging.next_event_bus == (
        f"arn:aws:events:eu-west-1:{config.environments['prod'].account}:event-bus/modelgate-prod-promotions"
    )
    assert prod.next_event_bus is None
    assert [t.protected(e) for t, e in ((sandbox, "sandbox"), (staging, "staging"), (prod, "prod"))] == [
        False,
        True,
        True,
    ]
    assert [t.receives_versions(e) for t, e in ((sandbox, "sandbox"), (staging, "staging"))] == [True, False]
