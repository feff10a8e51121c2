"""The configuration the demo deploys locally: the project's own file, with every environment in one account.

The local AWS (moto) keeps accounts apart and cannot play a call from one account into another, so the demo
puts every environment of the chain side by side in the first environment's account; everything else (names,
approvers, instance types, thresholds, Triton version) is what the source file says. A file with one model gets a
second one (SECOND_MODEL: its own group, and a quorum of 2 in the chain's last environment), so the demo shows
two model groups side by side. The CI/CD pipeline is left out: it deploys through CodePipeline, which has no local
stand-in.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from infra.config import ModelGateConfig, load_config, parse_config

HEADER = "# Written by `make demo` from {source}: every environment in the first one's account, two models, no CI/CD.\n"
SECOND_MODEL = {"name": "peak-load", "model_package_group": "peak-load-forecast"}


def single_account_variant(source: Path, target: Path) -> ModelGateConfig:
    """Write the variant of `source` to `target` and return it, validated like any configuration."""
    config = load_config(source)  # errors name the project's file, not the derived one
    raw = yaml.safe_load(source.read_text())
    raw.pop("cicd", None)
    account = config.environments[config.chain.first].account
    listed = raw["environments"]
    for environment in listed if isinstance(listed, list) else listed.values():
        environment["account"] = account
    if len(config.models) == 1 and isinstance(raw.get("models"), list):
        quorum = {config.chain.last: {"approvers": {"quorum": 2}}}
        raw["models"].append({**SECOND_MODEL, "environments": quorum})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(HEADER.format(source=source) + yaml.safe_dump(raw, sort_keys=False))
    return parse_config(raw, str(target))
