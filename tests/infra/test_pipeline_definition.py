"""The deployed SageMaker Pipeline definition (AWS::SageMaker::Pipeline in each stage's Pipeline stack): what a data
scientist starts and what SageMaker runs. Read from the session's synthesized templates."""

from __future__ import annotations

import json

import pytest

from infra.config import load_config
from infra.triton_images import image_uri
from modelgate.registry import PENDING, PIPELINE_EXECUTION_KEY
from pipelines import registration
from pipelines.steps import paths

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names
PIPELINE = f"Pipeline-{load_config().models[0].name}"  # the shipped config's one model

PARAMETERS = {
    "InputDataUri",
    "ProcessingInstanceType",
    "TrainingInstanceType",
    "TrainingInstanceCount",
    "MetricThreshold",
    "ModelPackageGroup",
    "RegisteredBy",
}


def _reference(node: dict) -> str:
    """A readable stand-in for a CloudFormation reference inside the definition text."""
    if "Ref" in node:
        return f"<Ref {node['Ref']}>"
    if "Fn::GetAtt" in node:
        return f"<GetAtt {'.'.join(node['Fn::GetAtt'])}>"
    if "Fn::GetStackOutput" in node:
        return f"<Output {node['Fn::GetStackOutput']['OutputName']}>"
    if "Fn::ImportValue" in node:
        return f"<Import {json.dumps(node['Fn::ImportValue'])}>".replace('"', "'")
    raise AssertionError(f"unexpected intrinsic in the pipeline definition: {node}")


def definition_of(template) -> tuple[dict, dict]:
    (pipeline,) = template.find_resources("AWS::SageMaker::Pipeline").values()
    body = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]
    if isinstance(body, dict):
        separator, parts = body["Fn::Join"]
        body = separator.join(part if isinstance(part, str) else _reference(part) for part in parts)
    return json.loads(body), pipeline["Properties"]


@pytest.fixture(scope="module")
def definition(template):
    cache = {}

    def get(env: str) -> dict:
        if env not in cache:
            cache[env] = definition_of(template(env, PIPELINE))[0]
        return cache[env]

    return get


def steps(definition: dict) -> dict[str, dict]:
    """Every step by name, the condition's branches included."""
    found = {}
    for step in definition["Steps"]:
        found[step["Name"]] = step
        for branch in ("IfSteps", "ElseSteps"):
            for inner in step.get("Arguments", {}).get(branch, []):
                found[inner["Name"]] = inner
    return found


def resolve_joins(node, outputs: dict[str, str]):
    """Std:Join / Get expressions with the given step outputs resolved to strings (others stay as they are)."""
    if isinstance(node, dict):
        if set(node) == {"Get"} and node["Get"] in outputs:
            return outputs[node["Get"]]
        if set(node) == {"Std:Join"}:
            values = [resolve_joins(value, outputs) for value in node["Std:Join"]["Values"]]
            if all(isinstance(value, str) for value in values):
                return node["Std:Join"]["On"].join(values)
            return {"Std:Join": {"On": node["Std:Join"]["On"], "Values": values}}
        return {key: resolve_joins(value, outputs) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve_joins(value, outputs) for value in node]
    return node


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_steps_run_prep_train_evaluate_then_gate_package_and_register(definition, env):
    definition = definition(env)
    assert [step["Name"] for step in definition["Steps"]] == ["Prep", "Train", "Evaluate", "MetricGate"]
    by_name = steps(definition)
    gate = by_name["MetricGate"]["Arguments"]
    assert [step["Name"] for step in gate["IfSteps"]] == ["Package", "Register"]
    assert [step["Name"] for step in gate["ElseSteps"]] == ["MetricTooHigh"]
    assert by_name["MetricTooHigh"]["Type"] == "Fail"
    # Data dependencies give the order: training reads prep's output, evaluation and packaging the model,
    # registration the packaged archives.
    text = {name: json.dumps(step) for name, step in by_name.items()}
    assert "Steps.Prep." in text["Train"]
    assert "Steps.Train.ModelArtifacts.S3ModelArtifacts" in text["Evaluate"]
    assert "Steps.Train.ModelArtifacts.S3ModelArtifacts" in text["Package"]
    assert "Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation']" in text["Package"]
    assert "Steps.Package.ProcessingOutputConfig.Outputs['models']" in text["Register"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_parameters_default_to_the_environment_config(definition, config, env):
    settings = config.environments[env]
    parameters = {p["Name"]: p for p in definition(env)["Parameters"]}
    assert set(parameters) == PARAMETERS
    assert parameters["ProcessingInstanceType"]["DefaultValue"] == settings.prep.processing_instance_type
    assert parameters["TrainingInstanceType"]["DefaultValue"] == settings.training.instance_type
    assert parameters["TrainingInstanceCount"]["DefaultValue"] == settings.training.instance_count
    assert parameters["MetricThreshold"] == {
        "Name": "MetricThreshold",
        "Type": "Float",
        "DefaultValue": settings.training.metric_threshold,
    }
    # One registry, held by dev: later environments (other accounts here) register into it by ARN.
    dev, group = config.environments["dev"], config.models[0].model_package_group
    assert parameters["ModelPackageGroup"]["DefaultValue"] == (
        group if env == "dev" else f"arn:aws:sagemaker:{dev.region}:{dev.account}:model-package-group/{group}"
    )
    assert parameters["InputDataUri"]["DefaultValue"].startswith("s3://<Output PublishOutputRefRawData")
    assert "DefaultValue" not in parameters["RegisteredBy"], "whoever starts a run must say who they are"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_training_hyperparameter_is_one_train_py_reads(definition, env):
    """No knob that does nothing: the closed-form fit has no epochs, so neither the pipeline (no `Epochs`
    parameter) nor the training job passes one; train.py would refuse it (tests/integration/test_training.py)."""
    from pipelines.steps import train as train_step

    hyperparameters = steps(definition(env))["Train"]["Arguments"]["HyperParameters"]
    accepted = {action.dest for action in train_step.parser()._actions}
    toolkit = {"sagemaker_program", "sagemaker_submit_directory"}
    assert set(hyperparameters) - toolkit <= accepted, set(hyperparameters) - toolkit - accepted
    assert "epochs" not in hyperparameters


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_prep_engine_follows_config(definition, template, config, env):
    prep = steps(definition(env))["Prep"]
    engine = config.environments[env].prep.engine
    if engine == "processing":
        assert prep["Type"] == "Processing"
        app = prep["Arguments"]["AppSpecification"]
        assert app["ContainerEntrypoint"][-1] == paths.STEP_SCRIPTS["prep"]
        inputs = {i["InputName"]: i["S3Input"] for i in prep["Arguments"]["ProcessingInputs"]}
        assert inputs["raw"]["S3Uri"] == {"Get": "Parameters.InputDataUri"}
        assert inputs["raw"]["LocalPath"] == paths.container_path(paths.PREP_RAW)
        outputs = {
            o["OutputName"]: o["S3Output"]["LocalPath"] for o in prep["Arguments"]["ProcessingOutputConfig"]["Outputs"]
        }
        assert outputs == {
            "curated": paths.container_path(paths.PREP_CURATED),
            "quarantine": paths.container_path(paths.PREP_QUARANTINE),
            "report": paths.container_path(paths.PREP_REPORT),
        }
        template(env, PIPELINE).resource_count_is("AWS::Glue::Job", 0)
    else:
        assert prep["Type"] == "Callback"
        assert prep["Arguments"] == {
            "input_uri": {"Get": "Parameters.InputDataUri"},
            "curated_uri": prep["Arguments"]["curated_uri"],
            "quarantine_uri": prep["Arguments"]["quarantine_uri"],
            "report_uri": prep["Arguments"]["report_uri"],
        }
        assert prep["SqsQueueUrl"].startswith("<Ref GluePrepRequests")
        assert {o["OutputName"] for o in prep["OutputParameters"]} == {"curated_uri", "job_run_id"}
        train = steps(definition(env))["Train"]
        assert {"Get": "Steps.Prep.OutputParameters['curated_uri']"} in [
            c["DataSource"]["S3DataSource"]["S3Uri"] for c in train["Arguments"]["InputDataConfig"]
        ]
        template(env, PIPELINE).resource_count_is("AWS::Glue::Job", 1)


def test_shipped_config_uses_both_prep_engines(config):
    assert config.environments["dev"].prep.engine == "processing"
    assert config.environments["test"].prep.engine == "glue"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_training_runs_on_the_configured_gpu_sharded_checkpointed_and_encrypted(definition, config, env):
    settings = config.environments[env]
    train = steps(definition(env))["Train"]["Arguments"]
    assert train["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert train["ResourceConfig"]["InstanceCount"] == {"Get": "Parameters.TrainingInstanceCount"}
    assert train["ResourceConfig"]["VolumeKmsKeyId"].startswith("<Output PublishOutputFnGetAttDataKey")
    assert train["AlgorithmSpecification"]["TrainingImage"].endswith("-gpu-py312")
    assert train["StoppingCondition"]["MaxRuntimeInSeconds"] == settings.training.max_runtime_minutes * 60
    assert train["HyperParameters"]["sagemaker_program"] == paths.STEP_SCRIPTS["train"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in train["InputDataConfig"]}
    assert channels[paths.TRAIN_CHANNEL]["S3DataDistributionType"] == "ShardedByS3Key"
    # The toolkit unpacks the code channel's bundle from a local path: the container needs no S3 access.
    code_key = channels["code"]["S3Uri"].rsplit("/", 1)[1]
    assert train["HyperParameters"]["sagemaker_submit_directory"] == f"/opt/ml/input/data/code/{code_key}"
    assert train["CheckpointConfig"]["LocalPath"] == paths.container_path(paths.CHECKPOINTS)
    assert "Execution.PipelineExecutionId" in json.dumps(train["CheckpointConfig"]["S3Uri"])
    assert train["OutputDataConfig"]["KmsKeyId"].startswith("<Output PublishOutputFnGetAttDataKey")
    assert train["EnableInterContainerTrafficEncryption"] is True


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_processing_jobs_encrypt_volumes_and_outputs_and_run_the_step_scripts(definition, env):
    for name, script in (("Evaluate", "evaluate"), ("Package", "package")):
        args = steps(definition(env))[name]["Arguments"]
        assert args["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"].startswith("<Output")
        assert args["ProcessingOutputConfig"]["KmsKeyId"].startswith("<Output")
        assert args["AppSpecification"]["ContainerEntrypoint"][-1] == paths.STEP_SCRIPTS[script]
        assert args["AppSpecification"]["ImageUri"].endswith("-cpu-py312")
        assert args["NetworkConfig"]["EnableInterContainerTrafficEncryption"] is True


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_gate_reads_the_evaluation_report_and_the_fail_step_says_why(definition, env):
    by_name = steps(definition(env))
    (property_file,) = by_name["Evaluate"]["PropertyFiles"]
    assert property_file == {
        "PropertyFileName": "EvaluationReport",
        "OutputName": "evaluation",
        "FilePath": "evaluation.json",
    }
    (condition,) = by_name["MetricGate"]["Arguments"]["Conditions"]
    assert condition["Type"] == "LessThanOrEqualTo"
    assert condition["LeftValue"]["Std:JsonGet"]["Path"] == "aggregate.mape_ratio"
    assert condition["LeftValue"]["Std:JsonGet"]["PropertyFile"] == {
        "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"
    }
    assert condition["RightValue"] == {"Get": "Parameters.MetricThreshold"}
    message = by_name["MetricTooHigh"]["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert condition["LeftValue"] in message, "the message shows the measured value"
    assert {"Get": "Parameters.MetricThreshold"} in message, "and the threshold"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_registration_is_the_request_of_pipelines_registration(definition, config, env):
    """Same request as the local runner's register(): group, PendingManualApproval, dev/test/uat/prod metadata,
    ModelMetrics = the evaluation report, Triton image + the version's prefix as model data. The metadata names
    the execution, so the approval can read who really started the run (separation of duties)."""
    execution = "arn:aws:sagemaker:eu-west-1:111111111111:pipeline/modelgate-training/execution/abc123"
    settings = config.environments[env]
    register = steps(definition(env))["Register"]
    assert register["Type"] == "RegisterModel"
    prefix = "s3://artifacts-bucket/execution/models"
    actual = resolve_joins(
        register["Arguments"],
        {
            "Steps.Package.ProcessingOutputConfig.Outputs['models'].S3Output.S3Uri": prefix,
            "Parameters.ModelPackageGroup": config.models[0].model_package_group,
            "Parameters.RegisteredBy": "scientist@example.com",
            "Execution.PipelineExecutionArn": execution,
        },
    )
    expected = registration.model_package_request(
        registration.ModelVersion(
            model_package_group=config.models[0].model_package_group,
            model_data_url=prefix + "/",
            registered_by="scientist@example.com",
            pipeline_execution_arn=execution,
            image_uri=image_uri(settings.region, settings.serving.triton_version),
            inference_instance_types=(settings.serving.instance_type,),
        )
    )
    assert actual.pop("SkipModelValidation") == "None"  # added by the SDK: validation is SageMaker's default
    assert actual == expected
    assert actual["ModelApprovalStatus"] == PENDING
    # No environment key: the pipeline does not know the chain; each environment reads as pending until it decides.
    assert actual["CustomerMetadataProperties"] == {
        registration.REGISTERED_BY_KEY: "scientist@example.com",
        PIPELINE_EXECUTION_KEY: execution,
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_placeholder_is_replaced_by_a_reference(template, env):
    text = json.dumps(template(env, PIPELINE).to_json())
    assert "modelgate-placeholder" not in text
    assert "modelgate-sentinel" not in text
    _, properties = definition_of(template(env, PIPELINE))
    assert properties["RoleArn"]["Fn::GetAtt"][0].startswith("TrainingExecutionRole")
