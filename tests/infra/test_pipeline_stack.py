"""The CloudFormation around the training pipeline: roles, KMS, the Glue engine and its callback plumbing, and the
model package group in the stateful stack. What a security review of the Pipeline stack would check."""

from __future__ import annotations

import json

import pytest

from infra.config import load_config
from modelgate.parameters import pipeline_name

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names
PIPELINE = f"Pipeline-{load_config().models[0].name}"  # the shipped config's one model


def statements(template, role_prefix: str) -> list[dict]:
    policies = [
        policy["Properties"]["PolicyDocument"]["Statement"]
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if any(role["Ref"].startswith(role_prefix) for role in policy["Properties"]["Roles"])
    ]
    assert policies, f"no policy attached to {role_prefix}*"
    return [statement for policy in policies for statement in policy]


def actions_of(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def resources_of(statement: dict) -> list:
    return statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]


def test_the_one_model_registry_is_in_the_registry_environments_retained_storage_stack(template, config):
    storage = template("dev", "Storage")
    (group,) = storage.find_resources("AWS::SageMaker::ModelPackageGroup").values()
    assert group["Properties"]["ModelPackageGroupName"] == config.models[0].model_package_group
    assert group["DeletionPolicy"] == "Retain"
    assert group["UpdateReplacePolicy"] == "Retain"
    for env in ENVIRONMENTS:
        template(env, PIPELINE).resource_count_is("AWS::SageMaker::ModelPackageGroup", 0)
        if env != "dev":  # one registry, even when environments share an account
            template(env, "Storage").resource_count_is("AWS::SageMaker::ModelPackageGroup", 0)


def test_later_environments_accounts_may_register_read_and_decide_on_the_registry(template, config):
    (group,) = template("dev", "Storage").find_resources("AWS::SageMaker::ModelPackageGroup").values()
    (statement,) = group["Properties"]["ModelPackageGroupPolicy"]["Statement"]
    later = {config.environments[env].account for env in ENVIRONMENTS[1:]} - {config.environments["dev"].account}
    assert set(statement["Principal"]["AWS"]) == {f"arn:aws:iam::{account}:root" for account in later}
    assert set(statement["Action"]) == {
        "sagemaker:CreateModelPackage",
        "sagemaker:DescribeModelPackageGroup",
        "sagemaker:DescribeModelPackage",
        "sagemaker:ListModelPackages",
        "sagemaker:UpdateModelPackage",
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_execution_role_passes_only_the_step_roles_and_only_to_sagemaker(template, env):
    pipeline = template(env, PIPELINE)
    (passing,) = [s for s in statements(pipeline, "TrainingExecutionRole") if "iam:PassRole" in actions_of(s)]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    passed = {r["Fn::GetAtt"][0] for r in resources_of(passing)}
    expected = {"TrainingTrainingRole", "TrainingEvaluationRole"} | (
        {"TrainingPrepRole"} if env != "test" else set()  # test preps with Glue, not a Processing job
    )
    assert {logical[:-8] for logical in passed} == expected


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_execution_role_starts_only_pipeline_jobs_and_registers_only_into_its_group(template, config, env):
    pipeline = template(env, PIPELINE)
    dev = config.environments["dev"]
    registry_group = (
        f"arn:aws:sagemaker:{dev.region}:{dev.account}:model-package-group/{config.models[0].model_package_group}"
    )
    text = json.dumps(statements(pipeline, "TrainingExecutionRole"))
    for statement in statements(pipeline, "TrainingExecutionRole"):
        if any(action.startswith("sagemaker:Create") for action in actions_of(statement)):
            for resource in resources_of(statement):
                rendered = json.dumps(resource)
                assert (
                    "-job/pipelines-*" in rendered
                    or f"model-package/{config.models[0].model_package_group}/*" in rendered
                    or rendered == json.dumps(registry_group)
                ), rendered
    assert '"Resource": "*"' not in text


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_job_roles_pull_only_the_step_images_and_read_only_their_code_object(template, env):
    pipeline = template(env, PIPELINE)
    for role in ("TrainingTrainingRole", "TrainingEvaluationRole"):
        found = statements(pipeline, role)
        (ecr,) = [s for s in found if "ecr:BatchGetImage" in actions_of(s)]
        assert resources_of(ecr) == ["arn:aws:ecr:eu-west-1:763104351884:repository/pytorch-training"]
        (code,) = [s for s in found if actions_of(s) == ["s3:GetObject"]]
        (resource,) = resources_of(code)
        assert resource.startswith("arn:aws:s3:::cdk-"), resource
        assert resource.endswith(".gz"), "one object: the bundle (CDK names file assets <hash>.<last extension>)"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_only_the_prep_role_reads_raw_data(template, env):
    pipeline = template(env, PIPELINE)
    for role in ("TrainingTrainingRole", "TrainingEvaluationRole", "TrainingExecutionRole"):
        assert "RawData" not in json.dumps(statements(pipeline, role)), role


def test_glue_engine_job_is_encrypted_bookmark_free_and_sized_from_config(template, config):
    settings = config.environments["test"].prep
    pipeline = template("test", PIPELINE)
    (job,) = pipeline.find_resources("AWS::Glue::Job").values()
    props = job["Properties"]
    assert props["GlueVersion"] == settings.glue_version
    assert props["WorkerType"] == settings.glue_worker_type
    assert props["NumberOfWorkers"] == settings.glue_workers
    assert props["Command"]["Name"] == "glueetl"
    assert props["Command"]["ScriptLocation"].endswith(".py")
    assert props["DefaultArguments"]["--job-bookmark-option"] == "job-bookmark-disable"
    assert props["DefaultArguments"]["--extra-py-files"].endswith(".zip")
    (security,) = pipeline.find_resources("AWS::Glue::SecurityConfiguration").values()
    assert props["SecurityConfiguration"] == {
        "Ref": next(iter(pipeline.find_resources("AWS::Glue::SecurityConfiguration")))
    }
    encryption = security["Properties"]["EncryptionConfiguration"]
    assert encryption["S3Encryptions"][0]["S3EncryptionMode"] == "SSE-KMS"
    assert encryption["CloudWatchEncryption"]["CloudWatchEncryptionMode"] == "SSE-KMS"
    assert encryption["JobBookmarksEncryption"]["JobBookmarksEncryptionMode"] == "CSE-KMS"


def test_glue_callback_plumbing_has_dead_letters_and_alarms(template):
    pipeline = template("test", PIPELINE)
    queues = pipeline.find_resources("AWS::SQS::Queue")
    (failures,) = [logical for logical in queues if logical.startswith("GluePrepFailuresQueue")]
    for logical, queue in queues.items():
        if logical == failures:
            # EventBridge writes undeliverable events here itself: a customer key would have to admit it.
            assert queue["Properties"]["SqsManagedSseEnabled"] is True
        else:
            assert "KmsMasterKeyId" in queue["Properties"], f"{logical} is encrypted with the data key"
    (requests,) = [
        q for logical, q in queues.items() if logical.startswith("GluePrepRequests") and "Dead" not in logical
    ]
    assert requests["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 5
    (mapping,) = pipeline.find_resources("AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    (rule,) = pipeline.find_resources("AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.glue"]
    assert pattern["detail-type"] == ["Glue Job State Change"]
    assert set(pattern["detail"]["state"]) == {"SUCCEEDED", "FAILED", "TIMEOUT", "STOPPED", "ERROR"}
    (target,) = rule["Properties"]["Targets"]
    failures_arn = {"Fn::GetAtt": [failures, "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": failures_arn}, "undeliverable job-state events are kept"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8
    (finish,) = pipeline.find_resources("AWS::Lambda::EventInvokeConfig").values()
    assert finish["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == failures_arn
    assert finish["Properties"]["MaximumRetryAttempts"] == 2
    alarms = pipeline.find_resources("AWS::CloudWatch::Alarm")
    # errors of both functions, the requests DLQ, the failure queue of the job-state events
    assert len(alarms) == 4
    (topic,) = pipeline.find_resources("AWS::SNS::Topic")
    for logical, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}], f"{logical} e-mails someone"


def test_callback_functions_answer_only_this_pipeline(template):
    pipeline = template("test", PIPELINE)
    (name,) = [p["Properties"]["PipelineName"] for p in pipeline.find_resources("AWS::SageMaker::Pipeline").values()]
    for role in ("GluePrepStartRole", "GluePrepFinishRole"):
        answering = [s for s in statements(pipeline, role) if any(a.startswith("sagemaker:") for a in actions_of(s))]
        assert answering, role
        for statement in answering:
            for resource in resources_of(statement):
                assert f":pipeline/{name}" in json.dumps(resource), resource


def test_environments_without_glue_have_no_glue_plumbing(template):
    dev = template("dev", PIPELINE)
    for kind in ("AWS::Glue::Job", "AWS::SQS::Queue", "AWS::Lambda::Function", "AWS::Events::Rule"):
        dev.resource_count_is(kind, 0)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_pipeline_is_named_after_project_environment_and_model_as_the_cli_derives_it(template, env, config):
    (pipeline,) = template(env, PIPELINE).find_resources("AWS::SageMaker::Pipeline").values()
    name = pipeline["Properties"]["PipelineName"]
    assert name == pipeline_name(config.project.name, config.models[0].name, env) == name.lower()


def _job_roles(pipeline) -> list[str]:
    roles = [logical for logical in pipeline.find_resources("AWS::IAM::Role") if logical.startswith("Training")]
    return [logical for logical in roles if "ExecutionRole" not in logical]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_job_roles_may_list_exactly_their_code_prefix(template, env):
    """SageMaker downloads an `S3DataType: S3Prefix` input (the `code` ProcessingInput and training channel) by
    listing the prefix (s3:ListBucket on the bucket, s3:prefix = the URI's key) before getting each object: with
    s3:GetObject alone every job of the first run fails to download its code."""
    pipeline = template(env, PIPELINE)
    (code,) = {
        json.dumps(resources_of(s)[0])
        for s in statements(pipeline, "TrainingTrainingRole")
        if actions_of(s) == ["s3:GetObject"]
    }
    bucket, key = json.loads(code).split(":::", 1)[1].split("/", 1)
    roles = _job_roles(pipeline)
    assert len(roles) >= 2, roles
    for role in roles:
        (listing,) = [s for s in statements(pipeline, role) if "s3:ListBucket" in actions_of(s) and "Condition" in s]
        assert actions_of(listing) == ["s3:ListBucket"]
        assert resources_of(listing) == [f"arn:aws:s3:::{bucket}"], role
        assert listing["Condition"] == {"StringEquals": {"s3:prefix": key}}, role


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_job_roles_may_create_grants_on_the_key_of_their_encrypted_volumes(template, env):
    """Jobs set VolumeKmsKeyId: SageMaker creates a KMS grant for the instance's EBS volume as the job role, so
    the role needs kms:CreateGrant on that key (for AWS resources only: kms:GrantIsForAWSResource)."""
    pipeline = template(env, PIPELINE)
    definition = json.dumps(pipeline.find_resources("AWS::SageMaker::Pipeline"))
    assert "VolumeKmsKeyId" in definition
    for role in _job_roles(pipeline):
        (grant,) = [s for s in statements(pipeline, role) if "kms:CreateGrant" in actions_of(s)]
        assert actions_of(grant) == ["kms:CreateGrant"]
        assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}, role
        (decrypt,) = [s for s in statements(pipeline, role) if "kms:Decrypt" in actions_of(s)]
        assert resources_of(grant) == resources_of(decrypt), "the data key, the one the volumes use"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_stack_outputs_what_a_data_scientist_needs_to_start_a_run(template, env):
    """Pipeline name and raw bucket as outputs: `modelgate pipeline start` and people read them, not the console."""
    pipeline_stack = template(env, PIPELINE)
    (pipeline,) = pipeline_stack.find_resources("AWS::SageMaker::Pipeline").values()
    outputs = pipeline_stack.to_json()["Outputs"]
    assert outputs["PipelineName"]["Value"] == pipeline["Properties"]["PipelineName"]
    assert "RawData" in json.dumps(outputs["RawBucket"]["Value"]), "the Storage stack's raw-data bucket"
    approval_outputs = template(env, "Approval").to_json()["Outputs"]
    assert {"ApprovalApiUrl", "HistoryTable"} <= set(approval_outputs)
