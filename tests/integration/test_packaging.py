"""Packaging: archives follow modelgate/model_repository.py, every config.pbtxt is a valid Triton ModelConfig
whose ensemble wiring is consistent, the ONNX model matches PyTorch, and the whole ensemble (one ONNX graph
behind a one-step ensemble) reproduces the PyTorch forecast in reading units, gaps included."""

from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest
import torch

from modelgate.evaluation_report import REPORT_FILE, CustomerMetrics, EvaluationReport
from modelgate.model_repository import (
    ENSEMBLE_INPUT,
    ENSEMBLE_OUTPUT,
    ENSEMBLE_OUTPUTS,
    ENSEMBLE_P10,
    ENSEMBLE_P90,
    HORIZON,
    MAX_BATCH_SIZE,
    WINDOW,
    Manifest,
    archive_name,
    model_names,
)
from pipelines.packaging import onnx_export
from pipelines.packaging.triton_repository import Packager, example_models, pack, package_models
from pipelines.steps import artifact, forecaster, package, quantiles
from pipelines.steps.paths import OPT_ML_ENV, PackagePaths, StepInputError
from sandbox.triton_inprocess import Repository, parse_config

CUSTOMERS = ("cust-00001", "cust-00002", "acme-7")
GROUP = "energy-forecast"


@pytest.fixture(scope="session")
def models():
    return example_models(CUSTOMERS)


@pytest.fixture(scope="session")
def packaged(models, tmp_path_factory):
    output = tmp_path_factory.mktemp("models")
    manifest = package_models(models, output, GROUP, verify_sample=len(CUSTOMERS), progress=False)
    extracted = tmp_path_factory.mktemp("extracted")
    for entry in manifest.archives:
        with tarfile.open(output / entry.archive) as archive:
            archive.extractall(extracted / entry.customer, filter="data")
    return output, manifest, extracted


def test_one_archive_per_customer_and_a_verifiable_manifest(packaged):
    output, manifest, _ = packaged
    assert sorted(p.name for p in output.iterdir()) == sorted([*(archive_name(c) for c in CUSTOMERS), "manifest.json"])
    on_disk = Manifest.from_json((output / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk.model_package_group == GROUP
    for entry in on_disk.archives:
        content = (output / entry.archive).read_bytes()
        assert entry.sha256 == hashlib.sha256(content).hexdigest()
        assert entry.size == len(content)


def test_archive_root_is_a_triton_repository_with_the_contract_names(packaged):
    output, _, _ = packaged
    names = model_names("acme-7")
    with tarfile.open(output / archive_name("acme-7")) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert {name.split("/")[0] for name in members} == set(names.values())
    assert {n for n, m in members.items() if m.isfile()} == {
        f"{names['forecaster']}/config.pbtxt",
        f"{names['forecaster']}/1/model.onnx",
        f"{names['ensemble']}/config.pbtxt",
    }
    assert members[f"{names['ensemble']}/1"].isdir()  # Triton wants a version directory for the ensemble too
    assert all(m.mtime == 0 and m.uid == 0 and not m.issym() for m in members.values())


def test_every_config_parses_with_tritons_model_config_and_the_ensemble_is_wired_consistently(packaged):
    _, _, extracted = packaged
    for customer in CUSTOMERS:
        names = model_names(customer)
        configs = {name: parse_config(extracted / customer / name / "config.pbtxt") for name in names.values()}
        assert all(config.name == name for name, config in configs.items())
        assert all(config.max_batch_size == MAX_BATCH_SIZE for config in configs.values())
        ensemble = configs[names["ensemble"]]
        assert ensemble.platform == "ensemble"
        assert [(t.name, list(t.dims)) for t in ensemble.input] == [(ENSEMBLE_INPUT, [WINDOW])]
        assert [(t.name, list(t.dims)) for t in ensemble.output] == [(name, [HORIZON]) for name in ENSEMBLE_OUTPUTS]
        assert configs[names["forecaster"]].platform == "onnxruntime_onnx"
        # Follow the tensors through the steps: each step reads what an earlier step (or the client) produced,
        # with the dims and type the step's own config declares.
        available = {t.name: (list(t.dims), t.data_type) for t in ensemble.input}
        order = [step.model_name for step in ensemble.ensemble_scheduling.step]
        assert order == [names["forecaster"]]  # no Python-backend step: the ONNX graph is the whole forecast
        for step in ensemble.ensemble_scheduling.step:
            model = configs[step.model_name]
            declared_in = {t.name: (list(t.dims), t.data_type) for t in model.input}
            declared_out = {t.name: (list(t.dims), t.data_type) for t in model.output}
            assert set(step.input_map) == set(declared_in)
            assert set(step.output_map) == set(declared_out)
            for key, value in step.input_map.items():
                assert available[value] == declared_in[key]
            for key, value in step.output_map.items():
                available[value] = declared_out[key]
        for output in ensemble.output:  # the point forecast and both quantiles reach the client
            assert available[output.name] == ([HORIZON], output.data_type)


def test_onnx_models_match_pytorch(models):
    packager = Packager(models)
    rng = np.random.default_rng(5)
    for customer in CUSTOMERS:
        assert packager.verify(customer, rng) < 1e-4


def test_onnx_model_declares_the_contract_tensors(packaged):
    import onnx

    _, _, extracted = packaged
    names = model_names("cust-00001")
    model = onnx.load(extracted / "cust-00001" / names["forecaster"] / "1" / "model.onnx")
    onnx.checker.check_model(model)
    assert model.ir_version == onnx_export.IR_VERSION
    [window] = model.graph.input
    assert window.name == ENSEMBLE_INPUT
    assert [output.name for output in model.graph.output] == list(ENSEMBLE_OUTPUTS)
    assert [d.dim_value or d.dim_param for d in window.type.tensor_type.shape.dim][1] == WINDOW


def readings_with_gaps(models, index: int, count: int, rng) -> np.ndarray:
    mean, std = float(models.mean[index]), float(models.std[index])
    readings = (mean + std * rng.normal(size=(count, WINDOW))).astype(np.float32)
    readings[0, :5] = np.nan  # leading gap: nothing to carry forward
    readings[1, 50:80] = np.nan  # outage inside the window
    readings[2, -1] = np.nan  # the latest hour is missing
    readings[3, ::2] = np.nan  # every other hour
    readings[4, : WINDOW - 200] = np.nan  # a short history: the weeks before it take the same hour of a later one
    return readings


def test_the_ensemble_reproduces_the_pytorch_forecast_in_reading_units(models, packaged):
    _, _, extracted = packaged
    rng = np.random.default_rng(9)
    for index, customer in enumerate(models.customers):
        repository = Repository(extracted / customer)
        readings = readings_with_gaps(models, index, 6, rng)
        answer = repository.infer(model_names(customer)["ensemble"], {ENSEMBLE_INPUT: readings})
        got = answer[ENSEMBLE_OUTPUT]
        params = models.params.select(slice(index, index + 1))
        expected = forecaster.predict(
            params, torch.from_numpy(readings)[None], models.mean[index : index + 1], models.std[index : index + 1]
        )[0].numpy()
        assert got.shape == (6, HORIZON)
        assert got.dtype == np.float32
        tolerance = 1e-4 * float(models.std[index])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=tolerance)
        # Not trivially the input: the forecast is the model's, not the seasonal-naive copy.
        assert not np.allclose(got, np.nan_to_num(readings[:, :HORIZON]))
        # P10/P90: the Python reference (quantiles.bounds, what evaluation scores) of the reference forecast,
        # with this customer's offsets (not another's), in order, and a real interval around it.
        own = [t[index].numpy() for t in models.intervals.tensors()]
        low, high = quantiles.bounds(expected, *own)
        np.testing.assert_allclose(answer[ENSEMBLE_P10], low, rtol=1e-5, atol=tolerance)
        np.testing.assert_allclose(answer[ENSEMBLE_P90], high, rtol=1e-5, atol=tolerance)
        assert (answer[ENSEMBLE_P10] < got).all()
        assert (got < answer[ENSEMBLE_P90]).all()


def test_archives_are_reproducible(models, packaged):
    output, _, _ = packaged
    again = pack(Packager(models).files("cust-00002"))
    assert again == (output / archive_name("cust-00002")).read_bytes()


def write_inputs(tmp_path, models, customers, group=GROUP):
    paths = PackagePaths.from_environ({OPT_ML_ENV: str(tmp_path)})
    artifact.save(models, paths.model, "algo-1")
    per_customer = [CustomerMetrics(c, 0.1, 1.0, 0.2, 2.0, 0.5, 24) for c in customers]
    report = EvaluationReport.from_customers(
        model_package_group=group, window=WINDOW, horizon=HORIZON, holdout_hours=24, per_customer=per_customer
    )
    paths.evaluation.mkdir(parents=True)
    (paths.evaluation / REPORT_FILE).write_text(report.to_json())
    return paths


def test_package_step_writes_archives_manifest_and_the_report(models, tmp_path):
    paths = write_inputs(tmp_path, models, CUSTOMERS)
    environ = {OPT_ML_ENV: str(tmp_path)}
    assert package.main(["--model-package-group", GROUP, "--verify-sample", "1"], environ) == 0
    assert json.loads((paths.models / "manifest.json").read_text())["model_package_group"] == GROUP
    assert (paths.models / REPORT_FILE).read_text() == (paths.evaluation / REPORT_FILE).read_text()


@pytest.mark.parametrize(
    ("customers", "group", "message"),
    [
        (CUSTOMERS[:2], GROUP, "not evaluated \\['cust-00002'\\]|not evaluated \\['acme-7'\\]"),
        ((*CUSTOMERS, "ghost"), GROUP, "evaluated but not trained \\['ghost'\\]"),
        (CUSTOMERS, "other-group", "is for group 'other-group'"),
    ],
)
def test_package_step_refuses_models_that_do_not_match_their_evaluation(models, tmp_path, customers, group, message):
    paths = write_inputs(tmp_path, models, customers, group)
    with pytest.raises(StepInputError, match=message):
        package.run(paths, GROUP)
    assert not paths.models.exists()


def test_package_step_refuses_models_without_interval_offsets(models, tmp_path):
    """An artifact without P10/P90 offsets (trained outside the training step) cannot give the served outputs:
    the step says so and writes nothing, instead of serving placeholder quantiles."""
    bare = forecaster.TrainedModels(models.customers, models.params, models.mean, models.std, models.hyperparameters)
    paths = write_inputs(tmp_path, bare, CUSTOMERS)
    assert package.main(["--model-package-group", GROUP], {OPT_ML_ENV: str(tmp_path)}) == 1
    assert "no P10/P90 interval offsets" in (tmp_path / "output" / "message").read_text()
    assert not paths.models.exists()


def test_package_step_without_a_report_fails_clearly(models, tmp_path):
    paths = write_inputs(tmp_path, models, CUSTOMERS)
    (paths.evaluation / REPORT_FILE).unlink()
    assert package.main(["--model-package-group", GROUP], {OPT_ML_ENV: str(tmp_path)}) == 1
    assert "evaluation report" in (tmp_path / "output" / "message").read_text()
