"""IAM enforced in the local AWS: the synthesized stages deployed, their Lambdas and pipeline jobs run with their
own roles' credentials, and a grant removed from a template is AccessDenied exactly where AWS would refuse."""

from __future__ import annotations

import copy

import pytest

from infra.config import load_config
from sandbox import iam as local_iam
from sandbox.approval import register_version, registry_event
from sandbox.aws import LocalAws, RoleNotAssumable
from sandbox.cloudformation import deploy_stage
from sandbox.deployed_functions import function_environ
from sandbox.lambda_runner import FunctionError, LocalFunction
from sandbox.pipeline_jobs import JobInputError, SageMakerJobs
from stacks.stage import pipeline_stack_id

PIPELINE = pipeline_stack_id(load_config().models[0])  # the shipped config's one model


def without(template: dict, role_prefix: str, action: str) -> dict:
    """The template with `action` removed from every policy statement attached to the role `role_prefix*`."""
    template = copy.deepcopy(template)
    removed = 0
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        if not any(role.get("Ref", "").startswith(role_prefix) for role in resource["Properties"]["Roles"]):
            continue
        statements = resource["Properties"]["PolicyDocument"]["Statement"]
        for statement in list(statements):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if action in actions:
                removed += 1
                kept = [a for a in actions if a != action]
                if kept:
                    statement["Action"] = kept
                else:
                    statements.remove(statement)
    assert removed, f"{role_prefix} has no {action} grant to remove"
    return template


@pytest.fixture
def local_aws(config):
    with LocalAws(config.environments["dev"].region) as aws:
        yield aws


def _stage(synth, config, env: str):
    return synth.outdir / f"assembly-{config.project.name}-{env}"


def test_pipeline_jobs_download_their_code_as_sagemaker_does(local_aws, synth, config, tmp_path):
    """Each job lists its `code` prefix and gets the bundle with its own role (SageMaker S3Prefix inputs)."""
    account = local_aws.account(config.environments["dev"].account)
    stacks = deploy_stage(account, _stage(synth, config, "dev"))
    jobs = SageMakerJobs(account, stacks[PIPELINE])
    for step in ("Prep", "Train", "Evaluate", "Package"):
        (bundle,) = jobs.download_code(step, tmp_path / step)
        assert bundle.read_bytes()[:2] == b"\x1f\x8b", "the gzip'ed source bundle"
    assert jobs.job_account("Train").client("sts").get_caller_identity()["Arn"].endswith("/SageMaker")


def test_a_job_role_without_list_bucket_cannot_download_its_code(local_aws, synth, config, tmp_path):
    """Issue 12 problem 2: with s3:GetObject alone (the template before the fix), listing the S3Prefix input is
    AccessDenied, so the job fails before its container starts, as on AWS."""
    account = local_aws.account(config.environments["dev"].account)

    def edit(stack: str, template: dict) -> dict:
        return without(template, "TrainingTrainingRole", "s3:ListBucket") if stack == PIPELINE else template

    stacks = deploy_stage(account, _stage(synth, config, "dev"), edit=edit)
    jobs = SageMakerJobs(account, stacks[PIPELINE])
    with pytest.raises(JobInputError, match=r"step Train: ClientError: failed to download .*AccessDenied"):
        jobs.download_code("Train", tmp_path / "train")
    jobs.download_code("Evaluate", tmp_path / "evaluate")  # other roles keep theirs
    assert any(d.action == "s3:ListBucket" and "TrainingRole" in d.principal for d in local_iam.DENIALS)


def test_a_function_without_its_send_grant_fails_with_access_denied(local_aws, synth, config, tmp_path):
    """The request-approval Lambda runs as its role: without ses:SendRawEmail on the sender identity the
    registry event is a function error (AccessDenied), not a sent e-mail."""
    env = config.environments["dev"]
    account = local_aws.account(env.account)

    def edit(stack: str, template: dict) -> dict:
        return without(template, "RequestApprovalRole", "ses:SendRawEmail") if stack == "Approval" else template

    stacks = deploy_stage(account, _stage(synth, config, "dev"), edit=edit)
    group = config.models[0].model_package_group
    arn = register_version(
        account,
        group=group,
        bucket=stacks["Storage"].physical_id("Artifacts"),
        registered_by="bob@example.com",
        chain=config.chain,
    )
    spec = stacks["Approval"].function("RequestApproval")
    with (
        LocalFunction(spec.name, spec.handler, function_environ(account, spec), log=tmp_path / "r.log") as fn,
        pytest.raises(FunctionError, match="AccessDenied"),
    ):
        fn.invoke(registry_event(arn, group, account.account, account.region))
    assert any(d.action == "ses:SendRawEmail" for d in local_iam.DENIALS)


def test_a_service_cannot_run_code_with_a_role_that_does_not_trust_it(local_aws, synth, config):
    account = local_aws.account(config.environments["dev"].account)
    stacks = deploy_stage(account, _stage(synth, config, "dev"))
    spec = stacks["Approval"].function("RequestApproval")
    with pytest.raises(RoleNotAssumable, match=r"sagemaker\.amazonaws\.com cannot assume"):
        account.assume(spec.role, "sagemaker.amazonaws.com")


def test_reading_an_sse_kms_object_needs_decrypt_on_its_key(local_aws, synth, config):
    """S3 decrypts SSE-KMS objects with the caller's permissions (kms:Decrypt via s3.<region>.amazonaws.com):
    a job role with s3:GetObject on the curated data but without kms:Decrypt on the data key cannot read it."""
    account = local_aws.account(config.environments["dev"].account)

    def edit(stack: str, template: dict) -> dict:
        return without(template, "TrainingTrainingRole", "kms:Decrypt") if stack == PIPELINE else template

    stacks = deploy_stage(account, _stage(synth, config, "dev"), edit=edit)
    curated = stacks["Storage"].physical_id("CuratedData")
    account.client("s3").put_object(Bucket=curated, Key="e-1/curated/customer=c-1/part.parquet", Body=b"rows")
    jobs = SageMakerJobs(account, stacks[PIPELINE])
    training, evaluation = jobs.job_account("Train").client("s3"), jobs.job_account("Evaluate").client("s3")
    key = "e-1/curated/customer=c-1/part.parquet"
    assert evaluation.get_object(Bucket=curated, Key=key)["Body"].read() == b"rows", "it keeps kms:Decrypt"
    with pytest.raises(training.exceptions.ClientError, match="AccessDenied"):
        training.get_object(Bucket=curated, Key=key)
    assert any(d.action.startswith("kms:Decrypt (S3 GetObject") for d in local_iam.DENIALS)
