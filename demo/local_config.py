"""The configuration the demo deploys locally: the project's own file, with every environment in one account.

The local AWS (moto) keeps accounts apart and cannot play a call from one account into another, so the demo
puts dev, test, uat and prod side by side in the dev account; everything else (names, approvers, instance
types, thresholds, Triton version) is exactly what the source file says. The CI/CD pipeline is left out: it
deploys through CodePipeline, which has no local stand-in.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from infra.config import ModelGateConfig, load_config, parse_config

HEADER = "# Written by `make demo` from {source}: every environment in the dev account, no CI/CD stack.\n"


def single_account_variant(source: Path, target: Path) -> ModelGateConfig:
    """Write the variant of `source` to `target` and return it, validated like any configuration."""
    config = load_config(source)  # errors name the project's file, not the derived one
    raw = yaml.safe_load(source.read_text())
    raw.pop("cicd", None)
    account = config.environments["dev"].account
    for environment in raw["environments"].values():
        environment["account"] = account
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(HEADER.format(source=source) + yaml.safe_dump(raw, sort_keys=False))
    return parse_config(raw, str(target))
