"""The Glue prep engine's glue code: a SageMaker Pipeline CallbackStep starts an AWS Glue job run and waits for it.

    CallbackStep "Prep" --SQS message--> start_prep()  -> glue.start_job_run(--callback_token=<token>, URIs...)
    Glue Job State Change (EventBridge) -> finish_prep() -> glue.get_job_run -> token
                                         -> sagemaker.send_pipeline_execution_step_success / _failure

The job run carries the callback token as an argument, so no table links runs to tokens. Both functions are
idempotent: SQS may deliver a message twice (the run already started for that token is found and reused), and
EventBridge may deliver an event twice (a token already answered is reported, not an error).

Message format of a CallbackStep (what SageMaker sends to the queue):
    {"token": "...", "pipelineExecutionArn": "arn:aws:sagemaker:...", "arguments": {...}, "status": "Executing"}
The arguments are pipelines/definition.py's: input_uri, curated_uri, quarantine_uri, report_uri (s3:// URIs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

TOKEN_ARGUMENT = "--callback_token"  # noqa: S105 - an argument name, not a secret
EXECUTION_ARGUMENT = "--pipeline_execution_arn"
ARGUMENTS = ("input_uri", "curated_uri", "quarantine_uri", "report_uri")
# Glue job run states that end a run (Glue Job State Change events carry one of these).
SUCCEEDED = "SUCCEEDED"
FAILED_STATES = frozenset({"FAILED", "TIMEOUT", "STOPPED", "ERROR"})
FINAL_STATES = FAILED_STATES | {SUCCEEDED}
# Glue errors that retrying the same request cannot fix: the pipeline is told at once instead of hanging.
_PERMANENT_START_ERRORS = frozenset({"EntityNotFoundException", "InvalidInputException", "AccessDeniedException"})
_MAX_REASON = 256  # SendPipelineExecutionStepFailure's FailureReason limit
_RUN_PAGES = 10  # how far back (x 200 runs) a redelivered message looks for the run it already started


class MalformedMessageError(ValueError):
    """A message that is not a CallbackStep request: nothing can be reported to a pipeline; it goes to the DLQ."""


@dataclass(frozen=True)
class PrepRequest:
    token: str
    execution_arn: str
    arguments: dict[str, str]

    def job_arguments(self) -> dict[str, str]:
        return {
            **{f"--{name}": value for name, value in self.arguments.items()},
            TOKEN_ARGUMENT: self.token,
            EXECUTION_ARGUMENT: self.execution_arn,
        }


@dataclass(frozen=True)
class Outcome:
    action: str  # started | already-started | rejected | succeeded | failed | already-answered | ignored
    job_run_id: str | None = None
    detail: str = ""


def parse_request(body: str) -> PrepRequest:
    """The CallbackStep message, or MalformedMessageError when it has no token to answer.

    Invalid arguments with a valid token are NOT an error here: `start_prep` reports them to the pipeline."""
    try:
        message = json.loads(body)
    except (TypeError, json.JSONDecodeError) as error:
        raise MalformedMessageError(f"message body is not JSON: {error}") from None
    if not isinstance(message, dict):
        raise MalformedMessageError(f"message body must be a JSON object, got {type(message).__name__}")
    token = message.get("token")
    if not isinstance(token, str) or not token:
        raise MalformedMessageError("message has no callback 'token': not sent by a SageMaker CallbackStep")
    arguments = message.get("arguments")
    return PrepRequest(
        token=token,
        execution_arn=str(message.get("pipelineExecutionArn") or ""),
        arguments=arguments if isinstance(arguments, dict) else {},
    )


def argument_problems(arguments: dict[str, Any]) -> list[str]:
    problems = [f"missing argument {name!r}" for name in ARGUMENTS if name not in arguments]
    for name in ARGUMENTS:
        value = arguments.get(name)
        if name in arguments and not (
            isinstance(value, str) and urlparse(value).scheme == "s3" and urlparse(value).netloc
        ):
            problems.append(f"argument {name!r} must be an s3:// URI, got {value!r}")
    unknown = sorted(set(arguments) - set(ARGUMENTS))
    if unknown:
        problems.append(f"unknown arguments {unknown}; expected {list(ARGUMENTS)}")
    return problems


def _fail_step(sagemaker: Any, token: str, reason: str) -> None:
    sagemaker.send_pipeline_execution_step_failure(CallbackToken=token, FailureReason=reason[:_MAX_REASON])


def _run_for_token(glue: Any, job_name: str, token: str) -> str | None:
    """The id of a run already started for `token`, if any (SQS delivers at least once)."""
    kwargs: dict[str, Any] = {"JobName": job_name, "MaxResults": 200}
    for _ in range(_RUN_PAGES):
        page = glue.get_job_runs(**kwargs)
        for run in page.get("JobRuns", []):
            if (run.get("Arguments") or {}).get(TOKEN_ARGUMENT) == token:
                return run["Id"]
        if not page.get("NextToken"):
            return None
        kwargs["NextToken"] = page["NextToken"]
    return None


def start_prep(body: str, *, glue: Any, sagemaker: Any, job_name: str) -> Outcome:
    """Handle one CallbackStep message: start the Glue job run for it (once).

    Raises MalformedMessageError (nothing to answer) and Glue's transient errors (throttling, concurrency): the
    message is then retried by SQS and ends in its DLQ. Permanent problems fail the pipeline step with a reason."""
    request = parse_request(body)
    problems = argument_problems(request.arguments)
    if problems:
        reason = "Glue prep request rejected: " + "; ".join(problems)
        _fail_step(sagemaker, request.token, reason)
        return Outcome("rejected", detail=reason)
    try:
        existing = _run_for_token(glue, job_name, request.token)
        if existing:
            return Outcome("already-started", job_run_id=existing)
        run_id = glue.start_job_run(JobName=job_name, Arguments=request.job_arguments())["JobRunId"]
    except glue.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code not in _PERMANENT_START_ERRORS:
            raise
        reason = f"Glue job {job_name} could not be started: {code}: {error.response['Error'].get('Message', '')}"
        _fail_step(sagemaker, request.token, reason)
        return Outcome("rejected", detail=reason)
    return Outcome("started", job_run_id=run_id)


def finish_prep(detail: dict[str, Any], *, glue: Any, sagemaker: Any, job_name: str) -> Outcome:
    """Handle one Glue Job State Change event's detail: answer the pipeline step whose token the run carries."""
    if detail.get("jobName") != job_name:
        return Outcome("ignored", detail=f"event for job {detail.get('jobName')!r}, not {job_name!r}")
    state, run_id = detail.get("state"), detail.get("jobRunId")
    if state not in FINAL_STATES or not run_id:
        return Outcome("ignored", job_run_id=run_id, detail=f"state {state!r} does not end a run")
    run = glue.get_job_run(JobName=job_name, RunId=run_id)["JobRun"]
    arguments = run.get("Arguments") or {}
    token = arguments.get(TOKEN_ARGUMENT)
    if not token:
        return Outcome("ignored", job_run_id=run_id, detail="run was not started by a pipeline (no callback token)")
    try:
        if state == SUCCEEDED:
            sagemaker.send_pipeline_execution_step_success(
                CallbackToken=token,
                OutputParameters=[
                    {"Name": "curated_uri", "Value": arguments["--curated_uri"]},
                    {"Name": "job_run_id", "Value": run_id},
                ],
            )
            return Outcome("succeeded", job_run_id=run_id)
        message = run.get("ErrorMessage") or detail.get("message") or "no error message"
        _fail_step(sagemaker, token, f"Glue job run {run_id} ended {state}: {message}")
        return Outcome("failed", job_run_id=run_id, detail=message)
    except sagemaker.exceptions.ClientError as error:
        # A redelivered event: the step was answered already (SageMaker refuses a second answer).
        if error.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return Outcome("already-answered", job_run_id=run_id, detail=error.response["Error"].get("Message", ""))
        raise
