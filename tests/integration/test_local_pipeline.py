"""The local runner runs the real step scripts end to end on a generated data set of 100 customers: prep,
batched training, evaluation, the condition, packaging into Triton archives, and registration in a (moto)
Model Registry as PendingManualApproval. The produced archives are then checked against Triton's own
ModelConfig protobuf and against the PyTorch models they came from."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass

import boto3
import numpy as np
import pytest
import torch
from google.protobuf import text_format
from moto import mock_aws
from tritonclient.grpc import model_config_pb2

from infra.config import load_config
from infra.triton_images import image_uri
from modelgate.evaluation_report import REPORT_FILE
from modelgate.model_repository import (
    ENSEMBLE_INPUT,
    ENSEMBLE_OUTPUT,
    ENSEMBLE_P10,
    ENSEMBLE_P90,
    HORIZON,
    WINDOW,
    model_names,
)
from modelgate.registry import PENDING
from pipelines import datagen
from pipelines.local_runner import ROOT, LocalRunResult, LocalRunSettings, LocalStepError, run_pipeline
from pipelines.steps import artifact, forecaster, quantiles, series
from pipelines.steps.paths import PREP_CURATED
from sandbox.triton_inprocess import Repository
from tests.conftest import once_per_run

GROUP = "energy-forecast"
BUCKET = "modelgate-artifacts-test"
PREFIX = f"s3://{BUCKET}/models/{GROUP}/run-1/"
IMAGE = image_uri("eu-west-1", "25.09")
SPEC = datagen.DatasetSpec(customers=100, days=42, seed=21)
pytestmark = pytest.mark.slow


def moto_clients() -> dict:
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return {"sagemaker": boto3.client("sagemaker", region_name="eu-west-1"), "s3": s3}


@dataclass
class Registered:
    result: LocalRunResult
    described: dict  # describe_model_package of the registered version
    objects: dict[str, bytes]  # the version prefix in S3: name -> content


# What the saved run depends on: a run saved by other code (another checkout, an earlier commit) is never reused.
_SOURCES = ("pipelines", "modelgate", "sandbox", "tests/integration/test_local_pipeline.py")


def sources_digest() -> str:
    digest = hashlib.sha256()
    for root in _SOURCES:
        path = ROOT / root
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> Registered:
    """One pipeline run for the whole test run, even with several xdist workers (tests/conftest.py
    `once_per_run`), keyed by a digest of the sources that produce it."""
    return once_per_run(tmp_path_factory, f"local-pipeline-{sources_digest()}", _register_a_version)


def _register_a_version(work_dir) -> Registered:
    settings = LocalRunSettings(
        work_dir=work_dir,
        model_package_group=GROUP,
        dataset=SPEC,
        hyperparameters={"shard-customers": 50},  # 2 shards: bounded memory
        # The closed-form fit on 6 weeks of data (4 of training targets, the validation week, the held-out week):
        # its aggregate MAPE ratio here is 1.006 against the best baseline with the constants the accuracy
        # bench's second dev round chose (1.033 with the first round's), so 1.0 would still refuse it: on short
        # histories the closed-form fit is about level with the seasonal window average.
        metric_threshold=1.05,
        image_uri=IMAGE,
        model_data_url=PREFIX,
        registered_by="data.scientist@example.com",
        inference_instance_types=("ml.g5.xlarge",),
        progress=False,
        threads=1,  # the suite runs on shared cores (pipelines/local_runner.py LocalRunSettings.threads)
    )
    with mock_aws():  # left before the tests run, so that no other test runs under this mock
        clients = moto_clients()
        result = run_pipeline(settings, **clients)
        described = clients["sagemaker"].describe_model_package(ModelPackageName=result.model_package_arn)
        key_prefix = PREFIX.removeprefix(f"s3://{BUCKET}/")
        listing = clients["s3"].list_objects_v2(Bucket=BUCKET, Prefix=key_prefix)["Contents"]
        objects = {
            o["Key"].removeprefix(key_prefix): clients["s3"].get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listing
        }
    return Registered(result, described, objects)


@pytest.fixture
def run(pipeline_run) -> LocalRunResult:
    return pipeline_run.result


def test_a_hundred_customers_are_trained_evaluated_packaged_and_registered(run):
    assert run.status == "registered", run.failure
    assert run.evaluation.aggregate.customers == 100
    assert run.evaluation.aggregate.mape_ratio <= 1.05
    aggregate = run.evaluation.aggregate
    assert aggregate.baseline in aggregate.baselines  # compared with the best of the peers (here about a tie)
    assert aggregate.rmse < aggregate.baselines["seasonal_naive_168"].rmse  # already better than last week's copy
    assert len(run.manifest.archives) == 100
    trained = artifact.shards(run.work_dir / "train" / "model")
    assert [len(shard.customers) for shard in trained] == [50, 50]  # trained, evaluated, packaged by shard
    assert run.seconds.keys() >= {"prep", "train", "evaluate", "package", "register"}


def test_malformed_records_end_in_quarantine_with_their_count(run):
    expected = run.dataset.expected_quarantine()
    assert run.prep_report["quarantined"] == expected
    assert run.prep_report["quarantined_total"] == sum(expected.values()) > 0
    lines = (run.work_dir / "prep" / "processing/output/quarantine/quarantine.jsonl").read_text().splitlines()
    assert len(lines) == sum(expected.values())


def test_the_registered_version_is_pending_everywhere_with_metrics_and_the_triton_container(pipeline_run):
    described = pipeline_run.described
    assert described["ModelPackageGroupName"] == GROUP
    assert described["ModelApprovalStatus"] == PENDING
    metadata = described["CustomerMetadataProperties"]
    # No environment key yet: the pipeline does not know the chain; each environment reads as pending until it decides.
    assert not set(metadata) & set(load_config().chain)
    assert metadata["registered_by"] == "data.scientist@example.com"
    statistics = described["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics == {"ContentType": "application/json", "S3Uri": PREFIX + REPORT_FILE}
    [container] = described["InferenceSpecification"]["Containers"]
    assert container == {"Image": IMAGE, "ModelDataUrl": PREFIX}


def test_the_version_prefix_holds_every_archive_with_the_manifest_checksums(pipeline_run):
    run, objects = pipeline_run.result, pipeline_run.objects
    # The report and its plot travel with the version: the approvers' report page shows both.
    assert set(objects) == {e.archive for e in run.manifest.archives} | {"manifest.json", REPORT_FILE, "forecasts.png"}
    assert json.loads(objects[REPORT_FILE])["aggregate"]["customers"] == 100
    for entry in run.manifest.archives:
        assert hashlib.sha256(objects[entry.archive]).hexdigest() == entry.sha256


def archive_files(run, customer: str) -> dict[str, bytes]:
    with tarfile.open(run.models_dir / f"{customer}.tar.gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def test_every_config_pbtxt_parses_with_tritons_model_config(run):
    parsed = 0
    for entry in run.manifest.archives:
        for name, content in archive_files(run, entry.customer).items():
            if name.endswith("config.pbtxt"):
                config = text_format.Parse(content.decode(), model_config_pb2.ModelConfig())
                assert config.name == name.split("/")[0]
                parsed += 1
    assert parsed == 2 * 100  # the ONNX forecaster and its one-step ensemble


@pytest.fixture
def trained(run):
    return artifact.load(run.work_dir / "train" / "output", scratch=run.work_dir / "loaded-model")


def test_every_onnx_model_matches_its_pytorch_model(run, trained):
    import onnxruntime

    rng = np.random.default_rng(3)
    for index, customer in enumerate(trained.customers):
        mean, std = float(trained.mean[index]), float(trained.std[index])
        readings = (mean + std * rng.normal(size=(8, WINDOW))).astype(np.float32)
        readings[::2, rng.choice(WINDOW, 40, replace=False)] = np.nan  # gaps: filled inside the graph
        onnx_bytes = archive_files(run, customer)[f"{model_names(customer)['forecaster']}/1/model.onnx"]
        session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        got, p10, p90 = session.run([ENSEMBLE_OUTPUT, ENSEMBLE_P10, ENSEMBLE_P90], {ENSEMBLE_INPUT: readings})
        one = trained.params.select(slice(index, index + 1))
        windows = torch.from_numpy(readings)[None]
        expected = forecaster.predict(one, windows, trained.mean[index : index + 1], trained.std[index : index + 1])
        np.testing.assert_allclose(got, expected[0].numpy(), rtol=1e-4, atol=1e-5 * std)
        # The training step's offsets for this customer (the artifact carries them), as evaluation applied them.
        low, high = quantiles.bounds(expected[0].numpy(), *(t[index].numpy() for t in trained.intervals.tensors()))
        np.testing.assert_allclose(p10, low, rtol=1e-4, atol=1e-5 * std)
        np.testing.assert_allclose(p90, high, rtol=1e-4, atol=1e-5 * std)


def test_the_ensemble_forecasts_real_held_out_weeks_like_pytorch(run, trained, tmp_path):
    data = series.read_curated(run.work_dir / "prep" / PREP_CURATED)
    for customer in ("cust-00001", "cust-00050", "cust-00100"):
        index, row = trained.customers.index(customer), data.customers.index(customer)
        end = int(data.lengths[row]) - trained.hyperparameters.holdout_hours
        readings = np.stack([data.values[row, end - WINDOW + 24 * k : end + 24 * k] for k in range(3)])
        with tarfile.open(run.models_dir / f"{customer}.tar.gz") as archive:
            archive.extractall(tmp_path / customer, filter="data")
        got = Repository(tmp_path / customer).infer(model_names(customer)["ensemble"], {ENSEMBLE_INPUT: readings})
        expected = forecaster.predict(
            trained.params.select(slice(index, index + 1)),
            torch.from_numpy(readings)[None],
            trained.mean[index : index + 1],
            trained.std[index : index + 1],
        )[0].numpy()
        assert got[ENSEMBLE_OUTPUT].shape == (3, HORIZON)
        np.testing.assert_allclose(got[ENSEMBLE_OUTPUT], expected, rtol=1e-5, atol=1e-4 * float(trained.std[index]))


def test_evaluation_writes_the_report_and_a_forecast_plot(run):
    assert run.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run.plot.stat().st_size > 20_000
    assert len(run.evaluation.per_customer) == 100
    # The served P10-P90 is scored on the held-out week: about the 80 % it aims at, for trained models on real
    # (generated) data, and in every customer's metrics (one customer's 168 hours can be far from it).
    assert 0.7 <= run.evaluation.aggregate.interval.coverage <= 0.9
    assert all(m.interval is not None for m in run.evaluation.per_customer)


@mock_aws
def test_a_failed_condition_stops_before_packaging_and_registration_with_sharded_training(tmp_path):
    aws = moto_clients()
    spec = datagen.DatasetSpec(customers=6, days=24, seed=5, late_start_share=0)
    settings = LocalRunSettings(
        work_dir=tmp_path / "work",
        model_package_group="strict-group",
        dataset=spec,
        instance_count=2,
        metric_threshold=0.01,
        threads=1,
        image_uri=IMAGE,
        model_data_url=f"s3://{BUCKET}/models/strict-group/run-1/",
        progress=False,
    )
    result = run_pipeline(settings, **aws)
    assert result.status == "failed"
    assert "above the threshold 0.01" in result.failure
    assert result.models_dir is None
    assert not (tmp_path / "work" / "package").exists()
    shards = sorted(p.name for p in (tmp_path / "work" / "train" / "model").glob("shard-*.pt"))
    assert shards == ["shard-algo-1-00000.pt", "shard-algo-2-00000.pt"]  # two hosts, customers split between them
    assert result.evaluation.aggregate.customers == 6
    with pytest.raises(aws["sagemaker"].exceptions.ClientError):
        aws["sagemaker"].describe_model_package_group(ModelPackageGroupName="strict-group")


@pytest.mark.parametrize(
    ("make", "message"), [(False, "raw input .* does not exist"), (True, "raw input .* holds no files")]
)
def test_missing_or_empty_input_fails_with_a_clear_message(tmp_path, make, message):
    raw = tmp_path / "raw"
    if make:
        raw.mkdir()
    settings = LocalRunSettings(work_dir=tmp_path / "work", model_package_group=GROUP, raw=raw, progress=False)
    with pytest.raises(LocalStepError, match=f"prep failed: prep: {message}"):
        run_pipeline(settings)


def test_the_runner_never_deletes_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(LocalStepError, match="not empty"):
        run_pipeline(LocalRunSettings(work_dir=tmp_path, model_package_group=GROUP, progress=False))
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@mock_aws
def test_registering_needs_an_image_a_prefix_and_s3(tmp_path):
    aws = moto_clients()
    settings = LocalRunSettings(work_dir=tmp_path, model_package_group=GROUP, progress=False)
    with pytest.raises(ValueError, match="image_uri, model_data_url"):
        run_pipeline(settings, sagemaker=aws["sagemaker"], s3=aws["s3"])
