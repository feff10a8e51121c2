"""`modelgate`: the approval workflow for people and CI/CD.

  modelgate status GROUP                           versions x environments: state, who decided, when
  modelgate approved GROUP --env ENV               the approved model of ENV as JSON (exit 1 if none)
  modelgate request-promotion GROUP --version N --to ENV
                                                   ask ENV's approvers (run with ENV's account credentials)
  modelgate set-registrant GROUP --version N --email E
                                                   administrators: say who registered a version whose registrant
                                                   is unknown (run with the registry account's credentials)
  modelgate history GROUP --table TABLE [--version N]
                                                   every decision recorded in an environment, oldest first

AWS credentials and region come from the usual places (environment, profile); `--role-arn` assumes a role first
(the CI/CD promotion gate assumes `<project>-<env>-promotion-gate` in the environment's account). The registry
(dev account/region) and the project name default to config/modelgate.yaml when it is there.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from modelgate.environments import ENVIRONMENTS, UnknownEnvironmentError, check_environment, previous_environment
from modelgate.parameters import ApprovedModel, ApprovedModelFormatError, parameter_name

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.code = code


def _session(args: argparse.Namespace) -> Any:
    import boto3

    session = boto3.Session(region_name=args.region) if args.region else boto3.Session()
    if not args.role_arn:
        return session
    try:
        credentials = session.client("sts").assume_role(RoleArn=args.role_arn, RoleSessionName="modelgate-cli")[
            "Credentials"
        ]
    except Exception as error:  # botocore errors: say which role could not be assumed
        raise CliError(f"could not assume {args.role_arn}: {error}", EXIT_USAGE) from None
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=session.region_name,
    )


def _defaults(args: argparse.Namespace) -> None:
    """Fill project name and registry location from the config file when not given."""
    if args.project and (not hasattr(args, "registry_account") or args.registry_account):
        return
    try:
        from modelgate.config import ConfigError, load_config

        config = load_config(args.config) if args.config else load_config()
    except (ImportError, ConfigError) as error:
        if not args.project:
            raise CliError(f"--project is required ({error})", EXIT_USAGE) from None
        return
    args.project = args.project or config.project.name
    if hasattr(args, "registry_account"):
        registry = config.environments[ENVIRONMENTS[0]]
        args.registry_account = args.registry_account or registry.account
        args.registry_region = args.registry_region or registry.region


def _group_ref(args: argparse.Namespace, session: Any) -> str:
    """The group as the SageMaker API needs it: an ARN when the registry is in another account."""
    caller = session.client("sts").get_caller_identity()["Account"]
    if not args.registry_account or args.registry_account == caller:
        return args.group
    return f"arn:aws:sagemaker:{args.registry_region}:{args.registry_account}:model-package-group/{args.group}"


def _registry(args: argparse.Namespace, session: Any) -> Any:
    return session.client("sagemaker", region_name=args.registry_region or session.region_name)


# -- commands --------------------------------------------------------------------------------------------------
def approved(args: argparse.Namespace) -> int:
    _defaults(args)
    session = _session(args)
    name = parameter_name(args.project, args.group, args.env)
    ssm = session.client("ssm")
    try:
        value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        raise CliError(
            f"no model of {args.group} is approved for {args.env}: parameter {name} does not exist "
            f"(region {session.region_name})"
        ) from None
    try:
        model = ApprovedModel.from_json(value)
    except (ApprovedModelFormatError, UnknownEnvironmentError) as error:
        raise CliError(f"parameter {name} is not a valid approved-model record: {error}") from None
    if model.environment != args.env or model.model_package_group != args.group:
        raise CliError(f"parameter {name} describes {model.model_package_group}/{model.environment}, not this")
    print(model.to_json())
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    from modelgate.approval.model_versions import list_model_versions

    _defaults(args)
    session = _session(args)
    sagemaker = _registry(args, session)
    try:
        versions = list_model_versions(sagemaker, _group_ref(args, session), limit=args.limit)
    except sagemaker.exceptions.ClientError as error:
        raise CliError(f"cannot list {args.group}: {error}") from None
    if not versions:
        raise CliError(f"model package group {args.group} has no versions")
    rows = [["version", "created", "registered by", *ENVIRONMENTS]]
    for version in versions:
        cells = []
        for env in ENVIRONMENTS:
            state = version.state(env)
            who, when = version.decided_by(env), (version.decided_at(env) or "")[:16].replace("T", " ")
            cells.append(f"{state} {who} {when}".strip() if who else state)
        rows.append(
            [str(version.version), version.created_at.strftime("%Y-%m-%d %H:%M"), version.registered_by or "?", *cells]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def request_promotion(args: argparse.Namespace) -> int:
    from modelgate.approval.events import ApprovalRequest, promotion_bus_name, promotion_entry
    from modelgate.approval.model_versions import UnknownModelVersion, read_model_version
    from modelgate.approval.rules import NotEligible, check_eligible

    _defaults(args)
    session = _session(args)
    account = args.registry_account or session.client("sts").get_caller_identity()["Account"]
    region = args.registry_region or session.region_name
    arn = f"arn:aws:sagemaker:{region}:{account}:model-package/{args.group.lower()}/{args.version}"
    try:
        version = read_model_version(_registry(args, session), arn)
        check_eligible(version, args.to)
    except (UnknownModelVersion, NotEligible) as problem:
        raise CliError(f"cannot request promotion: {problem}") from None
    caller = session.client("sts").get_caller_identity()["Arn"]
    request = ApprovalRequest(
        model_package_arn=arn,
        environment=args.to,
        request_id=f"cli:{uuid.uuid4()}",  # an explicit request: always a new e-mail
        source_environment=previous_environment(args.to),
        requested_by=caller,
    )
    bus = args.event_bus or promotion_bus_name(args.project, args.to)
    result = session.client("events").put_events(Entries=[promotion_entry(request, bus)])
    if result.get("FailedEntryCount"):
        raise CliError(f"the event bus refused the request: {result['Entries'][0].get('ErrorMessage')}")
    print(
        f"requested: {args.group} v{args.version} -> {args.to}; the {args.to} approvers will receive an e-mail "
        f"(event {result['Entries'][0].get('EventId')}, request {request.request_id})"
    )
    return EXIT_OK


def set_registrant(args: argparse.Namespace) -> int:
    """Record who registered a version that does not say (never overwrites: separation of duties fails closed)."""
    from modelgate.approval.model_versions import UnknownModelVersion, read_model_version
    from modelgate.approval.registrant import MAX_METADATA_VALUE, canonical
    from modelgate.registry import REGISTERED_BY_KEY, STARTED_BY_KEY, STARTED_BY_NAMES_KEY, customer_metadata

    _defaults(args)
    if "@" not in args.email or "," in args.email:
        raise CliError(f"--email must be one e-mail address, got {args.email!r}", EXIT_USAGE)
    session = _session(args)
    sts = session.client("sts").get_caller_identity()
    account = args.registry_account or sts["Account"]
    region = args.registry_region or session.region_name
    arn = f"arn:aws:sagemaker:{region}:{account}:model-package/{args.group.lower()}/{args.version}"
    sagemaker = _registry(args, session)
    try:
        version = read_model_version(sagemaker, arn)
    except UnknownModelVersion as problem:
        raise CliError(str(problem)) from None
    typed, started = version.registered_by, version.metadata.get(STARTED_BY_KEY)
    if typed and (canonical(typed) != canonical(args.email) or started):
        raise CliError(f"{args.group} v{args.version} already says it was registered by {typed}; not changed")
    recorded = {REGISTERED_BY_KEY: typed or args.email}
    if not started:  # what SageMaker recorded is kept; else the administrator's word
        recorded[STARTED_BY_KEY] = f"{args.email} (recorded by {sts['Arn']})"[:MAX_METADATA_VALUE]
        recorded[STARTED_BY_NAMES_KEY] = canonical(args.email)
    sagemaker.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus=version.approval_status,
        CustomerMetadataProperties=customer_metadata(version.metadata, extra=recorded),
    )
    print(f"recorded: {args.group} v{args.version} was registered by {args.email}")
    return EXIT_OK


def history(args: argparse.Namespace) -> int:
    from modelgate.approval.history import iter_history

    session = _session(args)
    count = 0
    for decision in iter_history(session.client("dynamodb"), args.table, args.group, version=args.version):
        count += 1
        if args.json:
            print(json.dumps(decision.__dict__, sort_keys=True))
        else:
            print(
                f"{decision.decided_at}  v{decision.model_version}  {decision.from_environment}->"
                f"{decision.to_environment}  {decision.state:<8}  {decision.decided_by}"
                + (f"  ({decision.reason})" if decision.reason else "")
            )
    if count == 0:
        raise CliError(f"no decisions recorded for {args.group} in {args.table}")
    return EXIT_OK


# -- parsing ---------------------------------------------------------------------------------------------------
def _environment(value: str) -> str:
    try:
        return check_environment(value)
    except UnknownEnvironmentError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="modelgate", description="ModelGate approval workflow")
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str, registry: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("group", help="model package group name")
        sub.add_argument("--region", help="AWS region (default: from the environment)")
        sub.add_argument("--role-arn", help="assume this role first (e.g. the environment's promotion-gate role)")
        sub.add_argument("--project", help="project name (default: config/modelgate.yaml)")
        sub.add_argument("--config", help="configuration file (default: config/modelgate.yaml)")
        if registry:
            sub.add_argument("--registry-account", help="account of the Model Registry (default: the dev account)")
            sub.add_argument("--registry-region", help="region of the Model Registry (default: the dev region)")
        sub.set_defaults(handler=handler)
        return sub

    sub = command("status", status, "versions x environments", registry=True)
    sub.add_argument("--limit", type=int, default=20, help="newest N versions (default 20)")
    sub = command("approved", approved, "the approved model of an environment, as JSON")
    sub.add_argument("--env", type=_environment, required=True)
    sub = command("request-promotion", request_promotion, "e-mail an environment's approvers", registry=True)
    sub.add_argument("--version", type=int, required=True)
    sub.add_argument("--to", type=_environment, required=True, help="the environment to promote to")
    sub.add_argument(
        "--event-bus",
        help="event bus of the target environment (name or ARN; default: its ModelGate bus <project>-<env>-promotions;"
        " the caller's role must carry the tag modelgate:promoter=<project>)",
    )
    sub = command("set-registrant", set_registrant, "record who registered a version (administrators)", registry=True)
    sub.add_argument("--version", type=int, required=True)
    sub.add_argument("--email", required=True, help="e-mail address of the person who registered the version")
    sub = command("history", history, "decisions recorded in one environment's history table")
    sub.add_argument("--table", required=True, help="the environment's history table (stack output HistoryTable)")
    sub.add_argument("--version", type=int)
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"modelgate {args.command}: {error}", file=sys.stderr)
        return error.code
    except Exception as error:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, BotoCoreError | ClientError):
            print(f"modelgate {args.command}: AWS error: {error}", file=sys.stderr)
            return EXIT_NOT_FOUND
        raise
