"""What a first deploy of an environment needs from its AWS account and CloudFormation cannot create: checked
before `make deploy` and shown again after it (`python -m infra.preflight --env dev [--after]`).

- SES: the sender identity must be verified (the stack declares it; SES mails its owner a link), and while the
  account is in the SES sandbox every recipient must be verified too, or approval e-mails bounce.
- Quotas: new accounts have 0 instances of the GPU types for endpoints and training jobs; the endpoint cannot
  start (and the pipeline's training step fails) until Service Quotas grants them.

Warnings, not errors: the deploy itself succeeds without these; what fails later is the first e-mail or the
endpoint's creation. Each warning says what to do. Without credentials, the checks are skipped with a note.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import ConfigError, Environment, load_config


@dataclass(frozen=True)
class Check:
    ok: bool
    message: str

    def __str__(self) -> str:
        return f"{'ok     ' if self.ok else 'WARNING'} {self.message}"


def ses_checks(ses, sesv2, sender: str, recipients: Iterable[str]) -> list[Check]:
    """Sender verified; sandbox or production access; in the sandbox, every recipient verified."""
    recipients = sorted(set(recipients))
    addresses = [sender, *recipients]
    identities = sorted({*addresses, *(address.rsplit("@", 1)[-1] for address in addresses)})  # or their domains
    attributes = ses.get_identity_verification_attributes(Identities=identities)["VerificationAttributes"]

    def verified(identity: str) -> bool:
        domain = identity.rsplit("@", 1)[-1]
        return any(attributes.get(i, {}).get("VerificationStatus") == "Success" for i in (identity, domain))

    checks = [
        Check(True, f"SES sender {sender} is verified")
        if verified(sender)
        else Check(
            False,
            f"SES sender {sender} is not verified: open the verification e-mail SES sent to it after the "
            "Approval stack was deployed (or verify its domain); until then no approval e-mail is sent",
        )
    ]
    try:
        production = bool(sesv2.get_account().get("ProductionAccessEnabled"))
    except (ClientError, BotoCoreError) as error:
        checks.append(Check(False, f"SES account status unknown ({error}); check it in the SES console"))
        return checks
    if production:
        checks.append(Check(True, "SES has production access: any recipient can be e-mailed"))
        return checks
    unverified = [address for address in recipients if not verified(address)]
    checks.append(
        Check(
            not unverified,
            "SES is in the sandbox: only verified addresses receive e-mail"
            + (
                f"; not verified: {', '.join(unverified)} (verify them, or request production access: "
                "SES console > Account dashboard > Request production access)"
                if unverified
                else "; every approver address is verified"
            ),
        )
    )
    return checks


def quota_needs(*settings: Environment) -> dict[str, int]:
    """Service Quotas quota name -> instances the environment needs at most, given every model's settings there
    (`model.environments[name]`): each model has its own endpoint and pipeline, so needs of one type add up."""
    needs: dict[str, int] = {}

    def need(name: str, count: int) -> None:
        needs[name] = needs.get(name, 0) + count

    for environment in settings:
        need(f"{environment.serving.instance_type} for endpoint usage", environment.serving.max_instances)
        need(f"{environment.training.instance_type} for training job usage", environment.training.instance_count)
        if environment.prep.engine == "processing":
            need(f"{environment.prep.processing_instance_type} for processing job usage", 1)
    return needs


def quota_checks(service_quotas, *settings: Environment) -> list[Check]:
    needs = quota_needs(*settings)
    values: dict[str, float] = {}
    for page in service_quotas.get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker"):
        for quota in page.get("Quotas", []):
            if quota.get("QuotaName") in needs:
                values[quota["QuotaName"]] = quota.get("Value", 0)
    checks = []
    for name, needed in needs.items():
        have = values.get(name, 0)  # not listed: the account still has the default, 0 for GPU types
        checks.append(
            Check(True, f"quota '{name}': {have:g} (needs {needed})")
            if have >= needed
            else Check(
                False,
                f"quota '{name}' is {have:g}, needs {needed}: request it in Service Quotas > Amazon SageMaker "
                "(new accounts start at 0 for GPU instances; approval can take days)",
            )
        )
    return checks


def run(environment: Environment, session, models: Sequence[Environment] = ()) -> list[Check]:
    """`models`: every model's settings in this environment (`model.environments[name]`); none: the
    environment's own."""
    models = tuple(models) or (environment,)
    region = environment.region
    recipients = tuple(dict.fromkeys(email for settings in models for email in settings.approvers.emails))
    checks = ses_checks(
        session.client("ses", region_name=region),
        session.client("sesv2", region_name=region),
        environment.sender_email,
        recipients,
    )
    return checks + quota_checks(session.client("service-quotas", region_name=region), *models)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, help="environment of config/modelgate.yaml")
    parser.add_argument("--config", default=None, help="another configuration file")
    parser.add_argument("--after", action="store_true", help="post-deploy summary wording")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else load_config()
        environment = config.environment(args.env)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    import boto3  # only here: `--help` and config errors need no AWS SDK

    title = "after deploy" if args.after else "before deploy"
    print(f"ModelGate {args.env} ({environment.account}, {environment.region}), {title}:")
    try:
        models = [model.environments[environment.name] for model in config.models]
        checks = run(environment, boto3.Session(), models)
    except (ClientError, BotoCoreError) as error:
        print(f"WARNING checks skipped: {error} (credentials for {environment.account} needed)")
        return 0
    for check in checks:
        print(f"  {check}")
    if not all(check.ok for check in checks):
        print("  (warnings do not stop the deploy; what they name fails later: e-mails, endpoint, training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
