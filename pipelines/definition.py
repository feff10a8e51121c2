"""The ModelGate training pipeline, built with the sagemaker SDK (3.x, `sagemaker.mlops.workflow`), offline.

    Prep ──► Train ──► Evaluate ──► MetricGate ─┬─ ratio <= threshold ─► Package ──► Register (PendingManualApproval)
                                                └─ otherwise ──────────► MetricTooHigh (FailStep: value, threshold)

- Prep is a SageMaker Processing job running pipelines/steps/prep.py, or (prep.engine: glue) a CallbackStep: the
  message goes to an SQS queue, a Lambda starts the AWS Glue job (pipelines/glue/prep_job.py) with the callback
  token, and a second Lambda reports the job run's end back to the pipeline (modelgate/glue_callback.py).
- Every S3 location is per pipeline execution (`<bucket>/<execution id>/...`), so executions never overwrite
  each other and the model version's archives have a prefix of their own.
- Step I/O paths come from the step interface (pipelines/steps/paths.py); the registration request from
  pipelines/registration.py, the contract the local runner registers with too.

Building is OFFLINE: the code the steps run is already in S3 as a CDK asset (its URI, the buckets, roles and key
are placeholders, pipelines/definition_inputs.py), the PipelineSession is given a region, a default bucket and
telemetry opt-out, and nothing here calls AWS. `python -m pipelines.definition` reads DefinitionSettings (JSON)
on stdin and prints the definition (`--serve`: one per line, for many); infra/build/pipeline_assets.py runs it in a
subprocess and caches the result, because importing the SDK alone takes ~3 s.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

from pipelines.definition_inputs import PIPELINE_NAME, DefinitionSettings, code_uri, placeholder
from pipelines.steps import paths

# The PyTorch training image (sagemaker-training toolkit inside) runs all four steps: training on GPU, the
# processing steps on its CPU variant (evaluate and package load the PyTorch models).
PYTORCH_VERSION = "2.8.0"
PYTHON_VERSION = "py312"
CODE_INPUT = "/opt/ml/processing/input/code"
CODE_CHANNEL = "code"
STEP_NAMES = ("Prep", "Train", "Evaluate", "MetricGate", "Package", "Register", "MetricTooHigh")
EVALUATION_PROPERTY_FILE = "EvaluationReport"
EVALUATION_REPORT = "evaluation.json"  # modelgate.evaluation_report's file name, at the evaluation output's root
METRIC_JSON_PATH = "aggregate.mape_ratio"
PROCESSING_VOLUME_GB = 30
TRAINING_VOLUME_GB = 50


def processing_bootstrap(code_archive: str, code_dir: str = CODE_INPUT) -> str:
    """Where processing containers start: unpack the source bundle (the code input: one object, downloaded under
    its own name), install the steps' pinned extra packages (requirements.txt at the bundle's root), then run the
    step script (the first argument) with the job's other arguments."""
    return (
        "set -euo pipefail; src=$(mktemp -d); "
        f'tar -xzf "{code_dir}/{code_archive}" -C "$src"; '
        'python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir -r "$src/requirements.txt"; '
        'cd "$src"; exec python3 "$@"'
    )


class DefinitionError(RuntimeError):
    pass


SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def _validate_config_once() -> None:
    """The SDK validates its config against a large JSON schema on every lookup (~0.5 s each, ~60 lookups per
    definition): validate ours once, then let the lookups through. Nothing else changes."""
    from sagemaker.core.config.config_manager import SageMakerConfig

    validate = SageMakerConfig.validate_sagemaker_config
    validate(SDK_CONFIG)
    frozen = json.dumps(SDK_CONFIG, sort_keys=True)

    def validate_unless_ours(sagemaker_config=None):
        if json.dumps(sagemaker_config, sort_keys=True) != frozen:
            validate(sagemaker_config)

    SageMakerConfig.validate_sagemaker_config = staticmethod(validate_unless_ours)


def _offline_session(region: str):
    """A PipelineSession that can build a definition without credentials or network."""
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    _validate_config_once()

    boto_session = boto3.Session(
        region_name=region,
        aws_access_key_id="offline",
        aws_secret_access_key="offline",  # noqa: S106
    )
    return PipelineSession(
        boto_session=boto_session,
        # Never used for uploads (every input is an S3 URI already), but resolving it would call STS and S3.
        default_bucket=placeholder("ArtifactsBucket"),
        sagemaker_config=SDK_CONFIG,  # telemetry off: it would call STS and an S3 endpoint
    )


def _s3(bucket: str, *parts):
    """s3://<bucket>/<execution id>/<parts...>: one prefix per pipeline execution."""
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    return Join(on="/", values=["s3:/", placeholder(bucket), ExecutionVariables.PIPELINE_EXECUTION_ID, *parts])


def image_uri(region: str, instance_type: str) -> str:
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        framework="pytorch",
        region=region,
        version=PYTORCH_VERSION,
        py_version=PYTHON_VERSION,
        instance_type=instance_type,
        image_scope="training",
    )


def build_pipeline(settings: DefinitionSettings):
    from sagemaker.core.network import NetworkConfig
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import (
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
        S3DataSource,
        StoppingCondition,
    )
    from sagemaker.core.training.configs import CheckpointConfig, Compute, InputData, Networking, OutputDataConfig
    from sagemaker.core.workflow.conditions import ConditionLessThanOrEqualTo
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.callback_step import CallbackOutput, CallbackStep
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep
    from sagemaker.train.model_trainer import ModelTrainer

    session = _offline_session(settings.region)
    kms = placeholder("KmsKeyArn")

    input_uri = ParameterString("InputDataUri", default_value=f"s3://{placeholder('RawBucket')}/{settings.raw_prefix}")
    processing_type = ParameterString("ProcessingInstanceType", default_value=settings.processing_instance_type)
    training_type = ParameterString("TrainingInstanceType", default_value=settings.training_instance_type)
    training_count = ParameterInteger("TrainingInstanceCount", default_value=settings.training_instance_count)
    threshold = ParameterFloat("MetricThreshold", default_value=settings.metric_threshold)
    group = ParameterString("ModelPackageGroup", default_value=settings.model_package_group)
    # Who starts the run (e-mail), recorded on the model version: approvers may not approve their own models, and
    # a version without it is not eligible for approval. No default, so every execution must say it.
    registered_by = ParameterString("RegisteredBy")
    parameters = [input_uri, processing_type, training_type, training_count, threshold, group, registered_by]

    cpu_image = image_uri(settings.region, settings.processing_instance_type)
    code = ProcessingInput(
        input_name=CODE_CHANNEL,
        s3_input=ProcessingS3Input(
            s3_uri=code_uri(), local_path=CODE_INPUT, s3_data_type="S3Prefix", s3_input_mode="File"
        ),
    )

    def processor(role: str, step: str) -> Processor:
        return Processor(
            role=placeholder(role),
            image_uri=cpu_image,
            instance_count=1,
            instance_type=processing_type,
            entrypoint=[
                "/bin/bash",
                "-c",
                processing_bootstrap(placeholder("CodeKey")),
                "modelgate-step",
                paths.STEP_SCRIPTS[step],
            ],
            volume_size_in_gb=PROCESSING_VOLUME_GB,
            volume_kms_key=kms,
            output_kms_key=kms,
            max_runtime_in_seconds=settings.max_runtime_seconds,
            base_job_name=f"modelgate-{step}",
            sagemaker_session=session,
            network_config=NetworkConfig(enable_network_isolation=False, encrypt_inter_container_traffic=True),
        )

    def s3_input(name: str, uri, relative: str) -> ProcessingInput:
        return ProcessingInput(
            input_name=name,
            s3_input=ProcessingS3Input(
                s3_uri=uri, local_path=paths.container_path(relative), s3_data_type="S3Prefix", s3_input_mode="File"
            ),
        )

    def s3_output(name: str, uri, relative: str) -> ProcessingOutput:
        return ProcessingOutput(
            output_name=name,
            s3_output=ProcessingS3Output(
                s3_uri=uri, local_path=paths.container_path(relative), s3_upload_mode="EndOfJob"
            ),
        )

    # 1. prep
    curated_uri = _s3("CuratedBucket", "curated")
    quarantine_uri = _s3("CuratedBucket", "quarantine")
    prep_report_uri = _s3("ArtifactsBucket", "prep")
    if settings.prep_engine == "processing":
        prep = ProcessingStep(
            name="Prep",
            description="Raw JSON readings -> cleaned, typed, de-duplicated Parquet per customer + quarantine",
            step_args=processor("PrepRoleArn", "prep").run(
                inputs=[s3_input("raw", input_uri, paths.PREP_RAW), code],
                outputs=[
                    s3_output("curated", curated_uri, paths.PREP_CURATED),
                    s3_output("quarantine", quarantine_uri, paths.PREP_QUARANTINE),
                    s3_output("report", prep_report_uri, paths.PREP_REPORT),
                ],
            ),
        )
        curated = prep.properties.ProcessingOutputConfig.Outputs["curated"].S3Output.S3Uri
    elif settings.prep_engine == "glue":
        prep = CallbackStep(
            name="Prep",
            description="AWS Glue job: raw JSON readings -> Parquet per customer + quarantine (same transformation)",
            sqs_queue_url=placeholder("GlueQueueUrl"),
            inputs={
                "input_uri": input_uri,
                "curated_uri": curated_uri,
                "quarantine_uri": quarantine_uri,
                "report_uri": Join(on="/", values=[prep_report_uri, paths.PREP_REPORT_FILE]),
            },
            outputs=[CallbackOutput(output_name="curated_uri"), CallbackOutput(output_name="job_run_id")],
        )
        curated = prep.properties.Outputs["curated_uri"]
    else:
        raise DefinitionError(f"unknown prep engine {settings.prep_engine!r}; expected 'processing' or 'glue'")

    # 2. GPU training: the PyTorch image's training toolkit unpacks the code channel's bundle (a local path, so
    # the container needs no S3 access of its own) and runs train.py with the hyperparameters as --name value.
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=placeholder("TrainingRoleArn"),
        training_image=image_uri(settings.region, settings.training_instance_type),
        base_job_name="modelgate-train",
        compute=Compute(
            instance_type=training_type,
            instance_count=training_count,
            volume_size_in_gb=TRAINING_VOLUME_GB,
            volume_kms_key_id=kms,
        ),
        networking=Networking(enable_network_isolation=False, enable_inter_container_traffic_encryption=True),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=settings.max_runtime_seconds),
        output_data_config=OutputDataConfig(s3_output_path=_s3("ArtifactsBucket", "training"), kms_key_id=kms),
        checkpoint_config=CheckpointConfig(
            s3_uri=_s3("ArtifactsBucket", "checkpoints"), local_path=paths.container_path(paths.CHECKPOINTS)
        ),
        hyperparameters={
            "sagemaker_program": paths.STEP_SCRIPTS["train"],
            "sagemaker_submit_directory": f"/opt/ml/input/data/{CODE_CHANNEL}/{placeholder('CodeKey')}",
        },
        environment={"MODELGATE_STEP": "train"},
    )
    train_args = trainer.train(
        input_data_config=[
            # ShardedByS3Key: with N instances each host receives (and trains) its own customers; prep writes one
            # object per customer. With one instance it is the same as FullyReplicated. The count is a pipeline
            # parameter, so the distribution cannot depend on it.
            InputData(
                channel_name=paths.TRAIN_CHANNEL,
                data_source=S3DataSource(
                    s3_data_type="S3Prefix", s3_uri=curated, s3_data_distribution_type="ShardedByS3Key"
                ),
            ),
            InputData(
                channel_name=CODE_CHANNEL,
                data_source=S3DataSource(
                    s3_data_type="S3Prefix", s3_uri=code_uri(), s3_data_distribution_type="FullyReplicated"
                ),
            ),
        ]
    )
    train = TrainingStep(
        name="Train",
        description="One forecasting model per customer, batched on the GPU, in one training job",
        step_args=train_args,
        depends_on=[prep] if settings.prep_engine == "glue" else None,
    )
    model_artifact = train.properties.ModelArtifacts.S3ModelArtifacts

    # 3. evaluation, read back through a PropertyFile
    evaluation_report = PropertyFile(name=EVALUATION_PROPERTY_FILE, output_name="evaluation", path=EVALUATION_REPORT)
    evaluate = ProcessingStep(
        name="Evaluate",
        description="Per-customer and aggregate MAPE/RMSE against the best cheap baseline, forecast plots",
        step_args=processor("EvaluationRoleArn", "evaluate").run(
            inputs=[
                s3_input("model", model_artifact, paths.EVALUATE_MODEL),
                s3_input("curated", curated, paths.EVALUATE_CURATED),
                code,
            ],
            outputs=[s3_output("evaluation", _s3("ArtifactsBucket", "evaluation"), paths.EVALUATE_OUTPUT)],
        ),
        property_files=[evaluation_report],
    )
    evaluation_uri = evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
    mape_ratio = JsonGet(step_name=evaluate.name, property_file=evaluation_report, json_path=METRIC_JSON_PATH)

    # 5. packaging: the version's prefix holds every <customer>.tar.gz + manifest.json
    package = ProcessingStep(
        name="Package",
        description="ONNX export + Triton ensemble repository per customer, packed as <customer>.tar.gz",
        step_args=processor("EvaluationRoleArn", "package").run(
            inputs=[
                s3_input("model", model_artifact, paths.PACKAGE_MODEL),
                s3_input("evaluation", evaluation_uri, paths.PACKAGE_EVALUATION),
                code,
            ],
            outputs=[s3_output("models", _s3("ArtifactsBucket", "models"), paths.PACKAGE_OUTPUT)],
        ),
    )
    models_uri = package.properties.ProcessingOutputConfig.Outputs["models"].S3Output.S3Uri

    # 6. registration
    register = ModelStep(
        name="Register",
        step_args=_register_arguments(
            session,
            settings,
            group=group,
            models_uri=models_uri,
            registered_by=registered_by,
        ),
    )

    # 4. the gate
    too_high = FailStep(
        name="MetricTooHigh",
        error_message=Join(
            on="",
            values=[
                f"Model not registered: aggregate MAPE ratio ({METRIC_JSON_PATH}, mean model MAPE / "
                "mean MAPE of the best baseline) is ",
                mape_ratio,
                ", above the threshold MetricThreshold = ",
                threshold,
                ". See the evaluation report at ",
                evaluation_uri,
            ],
        ),
    )
    gate = ConditionStep(
        name="MetricGate",
        conditions=[ConditionLessThanOrEqualTo(left=mape_ratio, right=threshold)],
        if_steps=[package, register],
        else_steps=[too_high],
    )
    return Pipeline(
        name=PIPELINE_NAME,
        parameters=parameters,
        steps=[prep, train, evaluate, gate],
        sagemaker_session=session,
    )


# Stand-ins for the values only known at run time, so that pipelines/registration.py builds the request with its
# own validation; each is then swapped for its pipeline expression (anything under the version prefix included).
_SENTINEL_GROUP = "modelgate-sentinel-group"
_SENTINEL_PREFIX = "s3://modelgate-sentinel-bucket/version/"
_SENTINEL_REGISTRANT = "registrant@modelgate-sentinel.invalid"
_SENTINEL_EXECUTION = "modelgate-sentinel-execution"


def registration_request(settings: DefinitionSettings) -> dict:
    """pipelines/registration.py's CreateModelPackage request, with sentinels where run-time values go."""
    from pipelines import registration

    return registration.model_package_request(
        registration.ModelVersion(
            model_package_group=_SENTINEL_GROUP,
            model_data_url=_SENTINEL_PREFIX,
            registered_by=_SENTINEL_REGISTRANT,
            pipeline_execution_arn=_SENTINEL_EXECUTION,
            image_uri=settings.triton_image_uri,
            inference_instance_types=(settings.inference_instance_type,),
        )
    )


def _swap_sentinels(node, *, group, models_uri, registered_by):
    from sagemaker.core.workflow.functions import Join

    swap = {"group": group, "models_uri": models_uri, "registered_by": registered_by}
    if isinstance(node, dict):
        return {key: _swap_sentinels(value, **swap) for key, value in node.items()}
    if isinstance(node, list):
        return [_swap_sentinels(value, **swap) for value in node]
    if node == _SENTINEL_GROUP:
        return group
    if node == _SENTINEL_REGISTRANT:
        return registered_by
    if node == _SENTINEL_EXECUTION:
        from sagemaker.core.workflow.execution_variables import ExecutionVariables

        return ExecutionVariables.PIPELINE_EXECUTION_ARN
    if isinstance(node, str) and node.startswith(_SENTINEL_PREFIX):
        return Join(on="", values=[models_uri, "/" + node.removeprefix(_SENTINEL_PREFIX)])
    if isinstance(node, str) and "modelgate-sentinel" in node:
        raise DefinitionError(f"registration request value {node!r} embeds a run-time value the pipeline cannot map")
    return node


def _register_arguments(session, settings: DefinitionSettings, *, group, models_uri, registered_by):
    """The ModelStep's step arguments: the CreateModelPackage request of pipelines/registration.py."""
    from sagemaker.core.model_registry import create_model_package_from_containers

    request = _swap_sentinels(
        registration_request(settings), group=group, models_uri=models_uri, registered_by=registered_by
    )
    # The SDK composes a ModelStep from a CreateModelPackage request it intercepts under a PipelineSession; the
    # "model" only has to say which session built it (no repacking, no model object of the SDK's own).
    session.init_model_step_arguments(SimpleNamespace(sagemaker_session=session))
    spec = request["InferenceSpecification"]
    return create_model_package_from_containers(
        sagemaker_session=session,
        containers=spec["Containers"],
        content_types=spec.get("SupportedContentTypes"),
        response_types=spec.get("SupportedResponseMIMETypes"),
        inference_instances=spec.get("SupportedRealtimeInferenceInstanceTypes"),
        model_package_group_name=request["ModelPackageGroupName"],
        model_metrics=request.get("ModelMetrics"),
        approval_status=request["ModelApprovalStatus"],
        customer_metadata_properties=request["CustomerMetadataProperties"],
        description=request.get("ModelPackageDescription"),
    )


def build_definition(settings: DefinitionSettings) -> dict:
    return json.loads(build_pipeline(settings).definition())


def _prepare(region: str) -> None:
    # The SDK creates boto3 clients at import time: they need a region, never credentials or the network.
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    # ModelTrainer validates its role with iam:SimulatePrincipalPolicy unless told not to: the role does not
    # exist yet (CloudFormation creates it), and synth must not call AWS.
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    import logging
    import warnings

    logging.disable(logging.WARNING)  # the SDK logs at INFO/WARNING on stdout-adjacent streams; keep stdout pure
    warnings.simplefilter("ignore")


def _text(settings: DefinitionSettings) -> str:
    return json.dumps(build_definition(settings), indent=1, sort_keys=True)


def main() -> int:
    """stdin: DefinitionSettings JSON; stdout: the pipeline definition JSON."""
    settings = DefinitionSettings.from_json(sys.stdin.read())
    _prepare(settings.region)
    try:
        definition = _text(settings)
    except DefinitionError as error:
        print(f"pipeline definition: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(definition)
    return 0


def serve() -> int:
    """`--serve`: one DefinitionSettings JSON a line on stdin -> one JSON line a request on stdout,
    {"definition": text} or {"error": message}, until stdin closes. The SDK is imported once, so each definition
    after the first costs ~2 s of CPU instead of ~8 (infra/build/pipeline_assets.py `shared_builders`). Builds
    in one process give byte-identical definitions to fresh processes (tests/unit/test_pipeline_assets.py).
    Anything else written to stdout (by the SDK) goes to stderr, so the replies stay parseable."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        settings = DefinitionSettings.from_json(line)
        _prepare(settings.region)
        try:
            reply = {"definition": _text(settings)}
        except DefinitionError as error:
            reply = {"error": f"pipeline definition: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main())
