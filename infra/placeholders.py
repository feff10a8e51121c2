"""`python -m infra.placeholders ENV`: warn before a real deploy when the configuration still holds the
shipped placeholder values (accounts like 222222222222, example.com addresses). `make deploy` runs it first.

It warns and exits 0 (a test account may well be 111111111111 in someone's sandbox); `--strict` exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from infra.config import ConfigError, ModelGateConfig, load_config

_EXAMPLE_ACCOUNTS = frozenset({"123456789012", "000000000000"})


def is_placeholder_account(account: str) -> bool:
    return account in _EXAMPLE_ACCOUNTS or len(set(account)) == 1


def placeholders(config: ModelGateConfig, environment: str | None) -> list[str]:
    """One line per placeholder value the deployment of `environment` (or all) would use."""
    found = []
    for env in config.select(environment):
        where = f"environments.{env.name}"
        if is_placeholder_account(env.account):
            found.append(f"{where}.account is {env.account}, a placeholder: put the real AWS account id")
        # Every model's approvers there (a model may name its own).
        approvers = [email for model in config.models for email in model.environments[env.name].approvers.emails]
        addresses = list(dict.fromkeys([env.sender_email, *env.approvers.emails, *approvers]))
        examples = [a for a in addresses if a.lower().endswith(("@example.com", "@example.org"))]
        if examples:
            found.append(f"{where}: e-mail addresses at example domains ({', '.join(examples)}): nobody will get them")
    if environment is None and config.cicd and is_placeholder_account(config.cicd.account):
        found.append(f"cicd.account is {config.cicd.account}, a placeholder")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.placeholders", description=__doc__.split("\n")[0])
    parser.add_argument("environment", nargs="?", help="the environment about to be deployed (default: all)")
    parser.add_argument("--config", help="configuration file (default: config/modelgate.yaml)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a placeholder is found")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else load_config()
        found = placeholders(config, args.environment)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    for line in found:
        print(f"WARNING: {config.source}: {line}", file=sys.stderr)
    if found:
        print("WARNING: the configuration still has the shipped placeholders; deploying anyway", file=sys.stderr)
    return 1 if found and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
