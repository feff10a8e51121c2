"""`modelgate`: the approval workflow for people and CI/CD.

  modelgate status [--model M]                     versions x environments: state, who decided, when
  modelgate approved [--model M] --env ENV         the approved model of ENV (JSON by default)
  modelgate request-promotion [--model M] --version N --to ENV
                                                   ask ENV's approvers (run with ENV's account credentials)
  modelgate set-registrant [--model M] --version N --email E
                                                   administrators: say who registered a version whose registrant
                                                   is unknown (run with the registry account's credentials)
  modelgate history [--model M] --env ENV [--version N]
                                                   every decision recorded in an environment, oldest first
  modelgate pipeline start|watch [--model M] ...   run the training pipeline of a model in an environment

M is a model's name or its model package group (`models:` of config/modelgate.yaml; the positional GROUP of
older scripts means the same); it may be left out when the config has one model. The project name, the
promotion chain, the registry (the chain's first environment: account/region) and each environment's region
come from the config too. Without a config (the CI gate installs only boto3), give the group and --project, and
MODELGATE_CHAIN (the chain's names, comma-separated) where the chain is needed. AWS
credentials come from the usual places (environment, profile); `--role-arn` assumes a role first (the CI/CD
promotion gate assumes `<project>-<env>-promotion-gate` in the environment's account). Every read command takes
`--output text|json`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from modelgate.chain import CHAIN, Chain, UnknownEnvironmentError
from modelgate.parameters import ApprovedModel, ApprovedModelFormatError, parameter_name, pipeline_name

# The exit-code contract (README "CLI"): a CI gate can tell "not approved" from "could not ask".
EXIT_OK = 0  # done; for `approved`: a model is approved for the environment
EXIT_FAILED = 1  # an unexpected error (a bug): Python's own traceback exit code
EXIT_USAGE = 2  # bad arguments or options (argparse's code), an unknown group or environment
EXIT_NOT_FOUND = 3  # nothing approved / nothing found / not eligible: the question was answered "no"
EXIT_AWS = 4  # AWS or configuration error: no credentials or region, endpoint unreachable, table not found,
#               access denied, a broken configuration file: the question could not be asked

EXIT_CODES_HELP = """exit codes:
  0  ok (for `approved`: a model is approved for the environment)
  2  usage: bad arguments, unknown group or environment
  3  not approved / nothing found / not eligible (the answer is "no")
  4  AWS or configuration error: no credentials or region, endpoint unreachable, table or stack not found,
     access denied, invalid config file (the question could not be asked)
  1  unexpected error (a bug; a traceback follows)"""


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.code = code


def _session(args: argparse.Namespace) -> Any:
    import boto3

    session = boto3.Session(region_name=args.region) if args.region else boto3.Session()
    if session.region_name is None:
        raise CliError("no AWS region: pass --region or set AWS_REGION (or a profile's region)", EXIT_AWS)
    if session.get_credentials() is None:
        raise CliError("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/..., or run in a role", EXIT_AWS)
    if not args.role_arn:
        return session
    try:
        credentials = session.client("sts").assume_role(RoleArn=args.role_arn, RoleSessionName="modelgate-cli")[
            "Credentials"
        ]
    except Exception as error:  # botocore errors: say which role could not be assumed
        raise CliError(f"could not assume {args.role_arn}: {error}", EXIT_AWS) from None
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=session.region_name,
    )


def _load_config(args: argparse.Namespace) -> Any:
    """The configuration, or None where it cannot be loaded and is not needed (the CI gate installs only boto3
    and passes --project). An explicit --config that is broken is an error."""
    try:
        from infra.config import ConfigError, load_config
    except ImportError:
        if args.config:
            raise CliError("--config needs the project's requirements (pydantic, PyYAML) installed", EXIT_AWS) from None
        return None
    try:
        return load_config(args.config) if args.config else load_config()
    except ConfigError as error:
        if args.config or not (args.project and _model_arg(args)):
            raise CliError(f"configuration: {error}", EXIT_AWS) from None
        return None


def _model_arg(args: argparse.Namespace) -> str | None:
    """--model, or the positional GROUP of older scripts (the same thing); both given must agree."""
    positional, named = getattr(args, "group", None), getattr(args, "model", None)
    if positional and named and positional != named:
        raise CliError(f"GROUP {positional!r} and --model {named!r} disagree: give one of them", EXIT_USAGE)
    return named or positional


def _check_environments(args: argparse.Namespace, chain: Chain | None) -> None:
    for option in ("env", "to"):
        value = getattr(args, option, None)
        if value and chain is not None and value not in chain:
            close = difflib.get_close_matches(value, chain.names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CliError(
                f"unknown environment {value!r}{hint}; the promotion chain is {' -> '.join(chain.names)}", EXIT_USAGE
            )


def _defaults(args: argparse.Namespace, need_model: bool = True) -> None:
    """Model (group and name), project, chain, regions and registry from the config when not given; the model
    and the environments checked against it."""
    config = _load_config(args)
    wanted = _model_arg(args)
    if not need_model and wanted is None and config is not None and len(config.models) != 1:
        wanted = config.models[0].name  # any model: only the project, chain and regions are needed
    if config is None:
        if not wanted or not args.project:
            raise CliError("give --model GROUP and --project, or run where config/modelgate.yaml is", EXIT_USAGE)
        args.group, args.model_name = wanted, wanted
        try:
            args.chain = Chain.from_environ() if os.environ.get(CHAIN, "").strip() else None
        except ValueError as error:
            raise CliError(str(error), EXIT_USAGE) from None
        _check_environments(args, args.chain)
        return
    if wanted is None:
        if len(config.models) != 1:
            names = ", ".join(f"{m.name} (group {m.model_package_group})" for m in config.models)
            raise CliError(f"{config.source} configures several models; say which with --model: {names}", EXIT_USAGE)
        model = config.models[0]
    else:
        model = next((m for m in config.models if wanted in (m.name, m.model_package_group)), None)
        if model is None:
            known = [name for m in config.models for name in (m.name, m.model_package_group)]
            close = difflib.get_close_matches(wanted, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listed = ", ".join(f"{m.name} (group {m.model_package_group})" for m in config.models)
            raise CliError(
                f"unknown model package group {wanted!r}{hint}; {config.source} configures: {listed}", EXIT_USAGE
            )
    args.group, args.model_name = model.model_package_group, model.name
    args.chain = config.chain
    _check_environments(args, args.chain)
    args.project = args.project or config.project.name
    registry = config.environments[config.chain.first]
    if hasattr(args, "registry_account"):
        args.registry_account = args.registry_account or registry.account
        args.registry_region = args.registry_region or registry.region
    environment = getattr(args, "env", None) or getattr(args, "to", None)
    if not args.region:
        args.region = config.environments[environment].region if environment else registry.region


def _chain(args: argparse.Namespace) -> Chain:
    if args.chain is None:
        raise CliError(
            f"the promotion chain is not known here: run where config/modelgate.yaml is, or set {CHAIN} "
            "to its environments' names, comma-separated",
            EXIT_USAGE,
        )
    return args.chain


def _group_ref(args: argparse.Namespace, session: Any) -> str:
    """The group as the SageMaker API needs it: an ARN when the registry is in another account."""
    caller = session.client("sts").get_caller_identity()["Account"]
    if not args.registry_account or args.registry_account == caller:
        return args.group
    return f"arn:aws:sagemaker:{args.registry_region}:{args.registry_account}:model-package-group/{args.group}"


def _registry(args: argparse.Namespace, session: Any) -> Any:
    return session.client("sagemaker", region_name=args.registry_region or session.region_name)


def _emit(args: argparse.Namespace, document: Any, text: str) -> None:
    print(json.dumps(document, indent=1, sort_keys=True) if args.output == "json" else text)


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
    except (ApprovedModelFormatError, UnknownEnvironmentError, ValueError) as error:
        raise CliError(f"parameter {name} is not a valid approved-model record: {error}", EXIT_AWS) from None
    if model.environment != args.env or model.model_package_group != args.group:
        raise CliError(
            f"parameter {name} describes {model.model_package_group}/{model.environment}, not this", EXIT_AWS
        )
    if args.output == "json":
        print(model.to_json())
    else:
        print(
            f"{model.model_package_group} v{model.model_version} is approved for {model.environment} by "
            f"{model.approved_by} at {model.approved_at[:16].replace('T', ' ')} UTC ({model.model_package_arn})"
        )
    return EXIT_OK


def _short(who: str | None) -> str:
    return (who or "").split("@", 1)[0][:10]


def status(args: argparse.Namespace) -> int:
    from modelgate.approval.model_versions import list_model_versions

    _defaults(args)
    session = _session(args)
    sagemaker = _registry(args, session)
    versions = list_model_versions(sagemaker, _group_ref(args, session), limit=args.limit)
    if not versions:
        raise CliError(f"model package group {args.group} has no versions")
    chain = _chain(args)
    document = [
        {
            "version": v.version,
            "created_at": v.created_at.isoformat(),
            "registered_by": v.registered_by,
            "environments": {
                env: {"state": v.state(env, chain), "decided_by": v.decided_by(env), "decided_at": v.decided_at(env)}
                for env in chain
            },
        }
        for v in versions
    ]
    # Fits a 120-column CI log: the state word, the approver's name, the day; `--output json` has the rest.
    rows = [["version", "created", "registrant", *chain]]
    for version in versions:
        cells = []
        for env in chain:
            state = version.state(env, chain).replace("PendingManualApproval", "Pending")
            who, when = _short(version.decided_by(env)), (version.decided_at(env) or "")[5:10]
            cells.append(f"{state} {who} {when}".strip() if who else state)
        rows.append(
            [
                str(version.version),
                version.created_at.strftime("%Y-%m-%d"),
                _short(version.registered_by) or "?",
                *cells,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
    _emit(args, document, text)
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
        check_eligible(version, args.to, _chain(args))
    except (UnknownModelVersion, NotEligible) as problem:
        raise CliError(f"cannot request promotion: {problem}") from None
    caller = session.client("sts").get_caller_identity()["Arn"]
    request = ApprovalRequest(
        model_package_arn=arn,
        environment=args.to,
        request_id=f"cli:{uuid.uuid4()}",  # an explicit request: always a new e-mail
        source_environment=_chain(args).previous(args.to),
        requested_by=caller,
    )
    bus = args.event_bus or promotion_bus_name(args.project, args.to)
    result = session.client("events").put_events(Entries=[promotion_entry(request, bus)])
    if result.get("FailedEntryCount"):
        raise CliError(f"the event bus refused the request: {result['Entries'][0].get('ErrorMessage')}", EXIT_AWS)
    print(
        f"requested: {args.group} v{args.version} -> {args.to}; the {args.to} approvers of {args.model_name} will "
        "receive an e-mail "
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


def approval_stack_name(project: str, environment: str) -> str:
    """The approval stack of an environment as CDK names it (Stage `<project>-<env>`, stack `Approval`)."""
    return f"{project}-{environment}-Approval"


def stack_output(session: Any, stack: str, key: str, what: str) -> str:
    """An output of a deployed stack (e.g. `HistoryTable`), or CliError(EXIT_AWS) saying what to do."""
    cloudformation = session.client("cloudformation")
    try:
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    except cloudformation.exceptions.ClientError as error:
        raise CliError(
            f"cannot find {what}: stack {stack} ({error.response['Error'].get('Message', error)}); "
            f"is it deployed in {session.region_name}?",
            EXIT_AWS,
        ) from None
    for output in described.get("Outputs") or []:
        if output.get("OutputKey") == key:
            return output["OutputValue"]
    raise CliError(f"stack {stack} has no {key} output", EXIT_AWS)


def history_table(session: Any, project: str, environment: str) -> str:
    """The environment's history table, from its approval stack's `HistoryTable` output."""
    stack = approval_stack_name(project, environment)
    return stack_output(session, stack, "HistoryTable", f"the history table of {environment} (or pass --table)")


def history(args: argparse.Namespace) -> int:
    from modelgate.approval.history import iter_history

    if not args.table and not args.env:
        raise CliError("give --env ENV (the table is found from its approval stack) or --table TABLE", EXIT_USAGE)
    _defaults(args)
    session = _session(args)
    table = args.table or history_table(session, args.project, args.env)
    dynamodb = session.client("dynamodb")
    try:
        decisions = list(iter_history(dynamodb, table, args.group, version=args.version))
    except dynamodb.exceptions.ResourceNotFoundException:
        raise CliError(f"history table {table} does not exist in {session.region_name}", EXIT_AWS) from None
    if not decisions:
        raise CliError(f"no decisions recorded for {args.group} in {table}")
    if args.output == "json":
        for decision in decisions:  # one object per line: easy to stream into jq
            print(json.dumps(decision.__dict__, sort_keys=True))
        return EXIT_OK
    for decision in decisions:
        state = f"{decision.state} ({decision.progress})" if decision.progress else decision.state
        state = state.replace("PendingManualApproval", "Counted")  # an approval short of the quorum
        print(
            f"{decision.decided_at[:16].replace('T', ' ')}  v{decision.model_version}  {decision.from_environment}->"
            f"{decision.to_environment}  {state:<8}  {decision.decided_by}"
            + (f"  ({decision.reason})" if decision.reason else "")
        )
    return EXIT_OK


# -- the training pipeline -------------------------------------------------------------------------------------
FINAL_STATES = {"Succeeded": EXIT_OK, "Failed": EXIT_NOT_FOUND, "Stopped": EXIT_NOT_FOUND}


def pipeline_start(args: argparse.Namespace) -> int:
    _defaults(args)
    session = _session(args)
    name = pipeline_name(args.project, args.model_name, args.env)  # as the pipeline stack names it
    parameters = {"RegisteredBy": args.registered_by}
    if args.input:
        parameters["InputDataUri"] = args.input
    for item in args.param or []:
        key, _, value = item.partition("=")
        if not key or not value:
            raise CliError(f"--param takes Name=Value, got {item!r}", EXIT_USAGE)
        parameters[key] = value
    sagemaker = session.client("sagemaker")
    try:
        arn = sagemaker.start_pipeline_execution(
            PipelineName=name,
            PipelineExecutionDisplayName=f"modelgate-cli-{uuid.uuid4().hex[:8]}",
            PipelineParameters=[{"Name": k, "Value": v} for k, v in parameters.items()],
            ClientRequestToken=str(uuid.uuid4()),
        )["PipelineExecutionArn"]
    except sagemaker.exceptions.ClientError as error:
        # AWS answers ResourceNotFound for a pipeline that does not exist; moto a ValidationException.
        code = error.response["Error"]["Code"]
        if code not in ("ResourceNotFound", "ValidationException") or "not" not in str(error).lower():
            raise
        raise CliError(
            f"cannot find the {args.env} pipeline of {args.model_name}: pipeline {name} does not exist in "
            f"{session.region_name}; is the {args.env} pipeline stack deployed?",
            EXIT_AWS,
        ) from None
    print(f"started {name}: {arn}")
    print(f"watch it: modelgate pipeline watch {arn}")
    if not args.watch:
        return EXIT_OK
    return watch_execution(sagemaker, arn)


def pipeline_watch(args: argparse.Namespace) -> int:
    _defaults(args, need_model=False)
    session = _session(args)
    return watch_execution(session.client("sagemaker"), args.execution_arn, poll_seconds=args.poll_seconds)


def watch_execution(sagemaker: Any, arn: str, *, poll_seconds: float = 30.0, sleep=None, out=None) -> int:
    """Print each step's status as it changes until the execution ends; exit 0 if it succeeded, else 3."""
    import time

    sleep, out = sleep or time.sleep, out or sys.stdout
    seen: dict[str, str] = {}
    while True:
        steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=arn, SortOrder="Ascending")
        for step in steps.get("PipelineExecutionSteps", []):
            name, status = step["StepName"], step.get("StepStatus", "")
            if seen.get(name) != status:
                seen[name] = status
                detail = f" ({step['FailureReason']})" if step.get("FailureReason") else ""
                print(f"{name:<24} {status}{detail}", file=out, flush=True)
        described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
        status = described["PipelineExecutionStatus"]
        if status in FINAL_STATES:
            reason = f" ({described['FailureReason']})" if described.get("FailureReason") else ""
            print(f"execution {status}{reason}", file=out, flush=True)
            return FINAL_STATES[status]
        sleep(poll_seconds)


# -- parsing ---------------------------------------------------------------------------------------------------
def _environment(value: str) -> str:
    """An environment name's syntax (the config's chain is checked once it is loaded: _defaults)."""
    if not value or not all(c.isalnum() or c in "-_." for c in value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an environment name")
    return value


EXAMPLES = {  # FIRST, NEXT and LAST stand for names of the config's promotion chain
    "status": """examples:
  modelgate status                                   # the config's only model, registry from the config
  modelgate status --model churn --output json | jq '.[0].environments.FIRST.state'""",
    "approved": """examples:
  modelgate approved --env NEXT                      # JSON of NEXT's approved model; exit 3 if none
  modelgate approved --model churn --env LAST --output text
  modelgate approved --model energy-forecast --env NEXT --project modelgate --region eu-west-1 \\
      --role-arn arn:aws:iam::444444444444:role/modelgate-NEXT-promotion-gate    # what the CI/CD gate runs""",
    "request-promotion": """examples:
  modelgate request-promotion --model churn --version 3 --to NEXT   # with NEXT's account credentials""",
    "pipeline start": """examples:
  modelgate pipeline start --env FIRST --registered-by me@example.com --watch
  modelgate pipeline start --model churn --env FIRST --registered-by me@example.com \\
      --input s3://<RawBucket>/readings/2026-11/ --param Epochs=20""",
    "pipeline watch": """examples:
  modelgate pipeline watch arn:aws:sagemaker:eu-west-1:222222222222:pipeline/<name>/execution/<id>""",
    "set-registrant": """examples:
  modelgate set-registrant --model churn --version 3 --email bob@example.com   # registry account's credentials""",
    "history": """examples:
  modelgate history --env FIRST                      # table found from the stack modelgate-FIRST-Approval
  modelgate history --model churn --env LAST --version 3 --output json""",
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="modelgate",
        description="ModelGate approval workflow",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str, registry: bool = False, read: bool = True):
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"{EXAMPLES[name]}\n\n{EXIT_CODES_HELP}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("group", nargs="?", help="the same as --model (older scripts)")
        sub.add_argument("--model", help="model name or model package group (default: the config's only model)")
        sub.add_argument("--region", help="AWS region (default: the environment's region in the config)")
        sub.add_argument("--role-arn", help="assume this role first (e.g. the environment's promotion-gate role)")
        sub.add_argument("--project", help="project name (default: config/modelgate.yaml)")
        sub.add_argument("--config", help="configuration file (default: config/modelgate.yaml)")
        if registry:
            sub.add_argument(
                "--registry-account", help="account of the Model Registry (default: the chain's first environment's)"
            )
            sub.add_argument(
                "--registry-region", help="region of the Model Registry (default: the chain's first environment's)"
            )
        sub.set_defaults(handler=handler, output="text")
        return sub

    def output(sub: argparse.ArgumentParser, default: str) -> None:
        sub.add_argument("-o", "--output", choices=("text", "json"), default=default, help=f"default {default}")

    sub = command("status", status, "versions x environments: state, who decided, when", registry=True)
    sub.add_argument("--limit", type=int, default=20, help="newest N versions (default 20)")
    output(sub, "text")
    sub = command("approved", approved, "the approved model of an environment (exit 3 if none)")
    sub.add_argument("--env", type=_environment, required=True)
    output(sub, "json")
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
    sub = command("history", history, "decisions recorded in one environment's history table, oldest first")
    sub.add_argument("--env", type=_environment, help="the environment (its table is found from its stack)")
    sub.add_argument("--table", help="the history table itself (stack output HistoryTable), instead of --env")
    sub.add_argument("--version", type=int)
    output(sub, "text")
    sub.add_argument("--json", dest="output", action="store_const", const="json", help="same as --output json")

    pipeline = commands.add_parser("pipeline", help="start the training pipeline and watch its steps")
    steps = pipeline.add_subparsers(dest="pipeline_command", required=True)

    def pipeline_command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = steps.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"{EXAMPLES['pipeline ' + name]}\n\nexit codes: 0 started / succeeded, 3 the run failed or was "
            "stopped, 4 AWS or configuration error, 2 usage",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--region", help="AWS region (default: the environment's region in the config)")
        sub.add_argument("--role-arn", help="assume this role first")
        sub.add_argument("--project", help="project name (default: config/modelgate.yaml)")
        sub.add_argument("--config", help="configuration file (default: config/modelgate.yaml)")
        sub.add_argument("--model", help="model name or model package group (default: the config's only model)")
        sub.set_defaults(handler=handler, group=None, output="text")
        return sub

    sub = pipeline_command("start", pipeline_start, "start a run of an environment's training pipeline")
    sub.add_argument("--env", type=_environment, required=True)
    sub.add_argument("--registered-by", required=True, help="your e-mail: recorded on the version it registers")
    sub.add_argument("--input", help="raw readings to train on (default: the pipeline's s3://<RawBucket>/readings/)")
    sub.add_argument("--param", action="append", help="another pipeline parameter, Name=Value (repeatable)")
    sub.add_argument("--watch", action="store_true", help="then print each step's status until the run ends")
    sub = pipeline_command("watch", pipeline_watch, "print each step's status until a run ends")
    sub.add_argument("execution_arn")
    sub.add_argument("--env", type=_environment, help="the environment (for its region)")
    sub.add_argument("--poll-seconds", type=float, default=30.0)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        return _fail(args, str(error), error.code)
    except Exception as error:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, BotoCoreError | ClientError):  # no network, access denied, throttled, ...
            return _fail(args, f"AWS error: {error}", EXIT_AWS)
        raise


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"modelgate {args.command}: {message}", file=sys.stderr)
    if getattr(args, "output", "text") == "json":  # a JSON reader gets a JSON answer on stdout too
        print(json.dumps({"error": message, "exit_code": code}))
    return code
