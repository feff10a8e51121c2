"""Lean serving: each customer's ensemble is one ONNX graph (normalisation, gap filling, forecaster, inverse
transform), no Python-backend step, and it computes what evaluation scored (forecaster.predict), gaps included.
Bad rows come out NaN from the graph; the inference API refuses them with 400 first (tests/unit/
test_serving_protocol.py), and the real Triton serves the graph through its one-step ensemble."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import onnxruntime
import pytest
import torch

from modelgate.model_repository import (
    ENSEMBLE_INPUT,
    ENSEMBLE_OUTPUT,
    ENSEMBLE_OUTPUTS,
    ENSEMBLE_P10,
    ENSEMBLE_P90,
    HORIZON,
    WINDOW,
    archive_name,
    model_names,
)
from pipelines.packaging import onnx_export
from pipelines.packaging.triton_repository import Packager, example_models, pack
from pipelines.steps import evaluate, forecaster, quantiles
from pipelines.steps.forecaster import WEEK, Hyperparameters
from pipelines.steps.series import HOUR_US, SeriesSet
from sandbox.triton_inprocess import InvalidInferenceRequest, Repository, UnknownModel, parse_config

CUSTOMERS = ("lean-1", "lean-2", "lean-3")


@pytest.fixture(scope="module")
def models():
    return example_models(CUSTOMERS, hidden=16, seed=3)


@pytest.fixture(scope="module")
def packager(models):
    return Packager(models)


def session(packager, customer):
    return onnxruntime.InferenceSession(packager.onnx_model(customer), providers=["CPUExecutionProvider"])


def reference(models, index, readings):
    one = models.params.select(slice(index, index + 1))
    windows = torch.from_numpy(readings)[None]
    return forecaster.predict(one, windows, models.mean[index : index + 1], models.std[index : index + 1])[0].numpy()


def reference_bounds(models, index, p50):
    return quantiles.bounds(p50, *(t[index].numpy() for t in models.intervals.tensors()))


def gap_patterns(models, index, rng) -> np.ndarray:
    """Every kind of gap serving sees, plus random masks: 64 windows (the batch limit)."""
    mean, std = float(models.mean[index]), float(models.std[index])
    readings = (mean + std * rng.normal(size=(64, WINDOW))).astype(np.float32)
    readings[0, :5] = np.nan  # leading gap: nothing to carry forward
    readings[1, 50:80] = np.nan  # an outage inside the window
    readings[2, -1] = np.nan  # the latest hour is missing
    readings[3, ::2] = np.nan  # every other hour
    readings[4, : WINDOW - 200] = np.nan  # a short history: earlier weeks take a later week's same hour
    readings[5, : WINDOW - 30] = np.nan  # under a week of history: hours with no same-hour reading are the mean
    readings[6, WEEK : 2 * WEEK] = np.nan  # a whole week missing
    readings[7, : WINDOW - 1] = np.nan  # a single reading, the latest
    readings[8, 1:] = np.nan  # a single reading, the oldest
    readings[9, : 3 * WEEK + 1] = np.nan  # the first reading one hour into the last week
    for row in range(10, 64):  # random gaps of random density, some with a leading gap too
        readings[row, rng.random(WINDOW) < rng.uniform(0.05, 0.95)] = np.nan
        readings[row, : int(rng.integers(0, WINDOW - 1))] = np.nan if row % 3 == 0 else readings[row, 0]
        if np.isnan(readings[row]).all():
            readings[row, -1] = mean
    return readings


def test_the_onnx_graph_equals_the_python_reference_on_windows_with_gaps(models, packager):
    rng = np.random.default_rng(21)
    for index, customer in enumerate(models.customers):
        readings = gap_patterns(models, index, rng)
        (got,) = session(packager, customer).run([ENSEMBLE_OUTPUT], {ENSEMBLE_INPUT: readings})
        expected = reference(models, index, readings)
        assert got.shape == (64, HORIZON)
        assert got.dtype == np.float32
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(models.std[index]))
        # P10/P90: quantiles.bounds of the reference (what evaluation scores), in order around the forecast.
        p50, p10, p90 = session(packager, customer).run(list(ENSEMBLE_OUTPUTS), {ENSEMBLE_INPUT: readings})
        np.testing.assert_array_equal(p50, got)
        low, high = reference_bounds(models, index, expected)
        np.testing.assert_allclose(p10, low, rtol=1e-5, atol=1e-5 * float(models.std[index]))
        np.testing.assert_allclose(p90, high, rtol=1e-5, atol=1e-5 * float(models.std[index]))
        assert (p10 <= p50).all()
        assert (p50 <= p90).all()
        assert (p90 - p10 > 0).all()
        # Gap filling is inside the graph: the same windows with gaps filled differently give other forecasts.
        zeros = session(packager, customer).run([ENSEMBLE_OUTPUT], {ENSEMBLE_INPUT: np.nan_to_num(readings)})[0]
        assert not np.allclose(zeros[:10], got[:10], atol=1e-3)


def test_the_graphs_gap_filling_is_forecaster_fill_gaps_exactly(models, packager):
    """The gathers pick the same elements as torch's: with a core that passes the window through (identity
    weights, no correction), the output is fill_gaps' window, bit for bit (its first HORIZON hours)."""
    core = onnx_export.export_template(models.hyperparameters.hidden)
    template = onnx_export.served_template(core)
    params = forecaster.ForecasterParameters(
        w_in=torch.zeros(1, WINDOW, HORIZON + models.hyperparameters.hidden),
        b_in=torch.zeros(1, 1, HORIZON + models.hyperparameters.hidden),
        w_out=torch.zeros(1, models.hyperparameters.hidden, HORIZON),
    )
    rng = np.random.default_rng(4)
    readings = gap_patterns(models, 0, rng)
    for offset in range(0, WINDOW, HORIZON):  # every hour of the window, HORIZON at a time
        params.w_in.zero_()
        params.w_in[0, offset + torch.arange(HORIZON), torch.arange(HORIZON)] = 1.0
        model = onnx_export.customer_model(template, params, 0, 0.0, 1.0)
        graph = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        (got,) = graph.run([ENSEMBLE_OUTPUT], {ENSEMBLE_INPUT: readings})
        expected = forecaster.fill_gaps(torch.from_numpy(readings))[:, offset : offset + HORIZON].numpy()
        np.testing.assert_array_equal(got, expected)


def test_rows_without_a_reading_or_with_an_infinite_one_come_out_nan_and_leave_the_others_alone(models, packager):
    rng = np.random.default_rng(8)
    readings = gap_patterns(models, 1, rng)[:6]
    readings[2] = np.nan  # no reading at all
    readings[4, 100] = np.inf  # an infinite reading
    readings[5, 7] = -np.inf
    got, p10, p90 = session(packager, "lean-2").run(list(ENSEMBLE_OUTPUTS), {ENSEMBLE_INPUT: readings})
    for output in (got, p10, p90):
        assert np.isnan(output[[2, 4, 5]]).all()
        assert np.isfinite(output[[0, 1, 3]]).all()
    fine = [0, 1, 3]
    np.testing.assert_allclose(got[fine], reference(models, 1, readings[fine]), rtol=1e-5, atol=1e-4)


def test_evaluation_scores_the_computation_that_is_served(models, packager):
    """evaluate.holdout_forecasts (the numbers the pipeline's condition judges) equals the served graph on the
    same held-out windows, short histories and gaps included."""
    hp = Hyperparameters(hidden=models.hyperparameters.hidden)
    rng = np.random.default_rng(2)
    hours = hp.min_hours + 2 * WEEK
    values = np.full((len(CUSTOMERS), hours), np.nan, np.float32)
    lengths = np.array([hours, hours - WEEK, hp.min_hours], np.int64)  # the last one: windows reach before it
    for index, length in enumerate(lengths):
        mean, std = float(models.mean[index]), float(models.std[index])
        values[index, :length] = mean + std * rng.normal(size=length)
        values[index, rng.choice(length, size=length // 5, replace=False)] = np.nan
        values[index, 0] = values[index, length - 1] = mean  # lengths run from the first to the last reading
    data = SeriesSet(CUSTOMERS, values, lengths, np.full(len(CUSTOMERS), 472_222 * HOUR_US, np.int64))
    trained = forecaster.TrainedModels(models.customers, models.params, models.mean, models.std, hp,
                                       intervals=models.intervals)  # fmt: skip
    scored = evaluate.holdout_forecasts(trained, data)

    padded = forecaster.padded(data)
    days = hp.holdout_hours // HORIZON
    for index, customer in enumerate(CUSTOMERS):
        first = int(padded.lengths[index]) - hp.holdout_hours
        windows = np.stack([padded.values[index, o - WINDOW : o] for o in first + HORIZON * np.arange(days)])
        served = session(packager, customer).run(list(ENSEMBLE_OUTPUTS), {ENSEMBLE_INPUT: windows})
        for got, evaluated in zip(served, (scored.model, scored.p10, scored.p90), strict=True):
            np.testing.assert_allclose(got, evaluated[index], rtol=1e-5, atol=1e-5 * float(models.std[index]))


def test_the_archive_has_no_python_backend_step(models, packager, tmp_path):
    customer = "lean-3"
    with tarfile.open(fileobj=io.BytesIO(pack(packager.files(customer)))) as archive:
        archive.extractall(tmp_path, filter="data")
        members = [m.name for m in archive.getmembers() if m.isfile()]
    assert not [m for m in members if m.endswith(".py")]
    names = model_names(customer)
    ensemble = parse_config(tmp_path / names["ensemble"] / "config.pbtxt")
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [names["forecaster"]]
    forecaster_config = parse_config(tmp_path / names["forecaster"] / "config.pbtxt")
    assert forecaster_config.platform == "onnxruntime_onnx"
    assert not forecaster_config.backend
    # The in-process Triton semantics answer the reference through the ensemble.
    readings = gap_patterns(models, 2, np.random.default_rng(6))[:5]
    got = Repository(tmp_path).infer(names["ensemble"], {ENSEMBLE_INPUT: readings})[ENSEMBLE_OUTPUT]
    np.testing.assert_allclose(got, reference(models, 2, readings), rtol=1e-5, atol=1e-4)
    assert archive_name(customer) == f"{customer}.tar.gz"


def test_the_in_process_triton_answers_only_the_outputs_a_request_names_as_triton_does(models, packager, tmp_path):
    """KServe v2 `outputs`: named outputs alone, in the request's order; none named: every declared one. An
    undeclared or repeated name and an unknown model are refused (Triton: 400 / 404), as the real server
    (test_the_real_triton_serves_the_one_step_ensemble) refuses an undeclared one."""
    customer = "lean-2"
    with tarfile.open(fileobj=io.BytesIO(pack(packager.files(customer)))) as archive:
        archive.extractall(tmp_path, filter="data")
    repository, entry = Repository(tmp_path), model_names(customer)["ensemble"]
    readings = {ENSEMBLE_INPUT: gap_patterns(models, 1, np.random.default_rng(8))[:4]}
    everything = repository.infer(entry, readings)
    assert sorted(everything) == sorted(ENSEMBLE_OUTPUTS)
    assert list(repository.infer(entry, readings, outputs=[ENSEMBLE_OUTPUT])) == [ENSEMBLE_OUTPUT]
    named = repository.infer(entry, readings, outputs=[ENSEMBLE_P90, ENSEMBLE_P10])
    assert list(named) == [ENSEMBLE_P90, ENSEMBLE_P10]
    np.testing.assert_array_equal(named[ENSEMBLE_P10], everything[ENSEMBLE_P10])
    with pytest.raises(InvalidInferenceRequest, match=f"unexpected inference output 'P50' for model '{entry}'"):
        repository.infer(entry, readings, outputs=[ENSEMBLE_OUTPUT, "P50"])
    with pytest.raises(InvalidInferenceRequest, match=f"output '{ENSEMBLE_OUTPUT}' already exists"):
        repository.infer(entry, readings, outputs=[ENSEMBLE_OUTPUT, ENSEMBLE_OUTPUT])
    with pytest.raises(UnknownModel, match="'lean-9_ensemble' is not found"):
        repository.infer("lean-9_ensemble", readings)


def test_the_package_step_refuses_a_graph_that_differs_from_what_was_evaluated(models, packager):
    """verify (run by package_models on a sample) compares the served graph with forecaster.predict and the
    trained normalisation: a graph with another customer's mean and std is refused, not shipped."""
    index = 0
    template = onnx_export.served_template(onnx_export.export_template(models.hyperparameters.hidden))
    mean, std = float(models.mean[index]), float(models.std[index])
    good = onnx_export.customer_model(template, models.params, index, mean, std)
    assert onnx_export.verify(good, models.params, index, np.random.default_rng(0), mean, std) < 1e-4 * max(1.0, std)
    # A packaging mix-up: the right weights with the next customer's normalisation.
    mixed = onnx_export.customer_model(template, models.params, index, float(models.mean[1]), float(models.std[1]))
    with pytest.raises(onnx_export.OnnxExportError, match="differs from PyTorch"):
        onnx_export.verify(mixed, models.params, index, np.random.default_rng(0), mean, std)
    with pytest.raises(onnx_export.OnnxExportError, match="needs the customer's mean and std"):
        onnx_export.customer_model(template, models.params, index)


def test_the_package_step_refuses_quantiles_that_differ_from_what_was_evaluated(models):
    """The same for the interval: the next customer's offsets in this customer's graph are refused."""
    index = 0
    core = onnx_export.export_template(models.hyperparameters.hidden)
    template = onnx_export.with_intervals(onnx_export.served_template(core))
    mean, std = float(models.mean[index]), float(models.std[index])
    good = onnx_export.customer_model(template, models.params, index, mean, std, models.intervals)
    assert onnx_export.verify(good, models.params, index, np.random.default_rng(0), mean, std, models.intervals) >= 0
    swapped = quantiles.Intervals(*(t[[1, 0, 2]] for t in models.intervals.tensors()))
    mixed = onnx_export.customer_model(template, models.params, index, mean, std, swapped)
    with pytest.raises(onnx_export.OnnxExportError, match="differs from PyTorch"):
        onnx_export.verify(mixed, models.params, index, np.random.default_rng(0), mean, std, models.intervals)
    with pytest.raises(onnx_export.OnnxExportError, match="needs the customer's interval offsets"):
        onnx_export.customer_model(template, models.params, index, mean, std)


def test_the_real_triton_serves_the_one_step_ensemble(models, packager, tmp_path):
    """Triton (nvidia-pytriton's server, ONNX through the local runner) answers the reference over the binary
    tensor protocol with a kept-alive connection; wrong shapes are Triton's own 400."""
    pytest.importorskip("tritonclient.http")
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from sandbox.triton import LocalTriton, TritonUnavailable
    from sandbox.triton_repository import extract, localize

    customer = "lean-1"
    (tmp_path / "archive").mkdir()
    try:
        triton = LocalTriton(tmp_path / "triton").start()
    except TritonUnavailable as error:
        pytest.skip(str(error))
    try:
        local = localize(extract(pack(packager.files(customer)), tmp_path / "archive"), triton.repository)
        triton.load(local.entry)
        client = httpclient.InferenceServerClient(triton.url.removeprefix("http://"), connection_timeout=60)
        readings = gap_patterns(models, 0, np.random.default_rng(12))[:16]
        expected = reference(models, 0, readings)
        tensor = httpclient.InferInput(ENSEMBLE_INPUT, list(readings.shape), "FP32")
        tensor.set_data_from_numpy(readings, binary_data=True)
        for _ in range(3):  # the same connection, reused; a client that asks for FORECAST gets FORECAST alone
            output = httpclient.InferRequestedOutput(ENSEMBLE_OUTPUT, binary_data=True)
            result = client.infer(local.entry, [tensor], outputs=[output])
            np.testing.assert_allclose(result.as_numpy(ENSEMBLE_OUTPUT), expected, atol=1e-4)
            assert [o["name"] for o in result.get_response()["outputs"]] == [ENSEMBLE_OUTPUT]
        # Naming no output: every one, P10 and P90 as the reference computes them.
        result = client.infer(local.entry, [tensor])
        assert sorted(o["name"] for o in result.get_response()["outputs"]) == sorted(ENSEMBLE_OUTPUTS)
        low, high = reference_bounds(models, 0, expected)
        np.testing.assert_allclose(result.as_numpy(ENSEMBLE_P10), low, atol=1e-4)
        np.testing.assert_allclose(result.as_numpy(ENSEMBLE_P90), high, atol=1e-4)
        unknown = httpclient.InferRequestedOutput("P50", binary_data=True)
        with pytest.raises(InferenceServerException, match="unexpected inference output 'P50'") as refused:
            client.infer(local.entry, [tensor], outputs=[unknown])
        assert refused.value.status() == "400"
        short = httpclient.InferInput(ENSEMBLE_INPUT, [1, WINDOW - 1], "FP32")
        short.set_data_from_numpy(readings[:1, 1:], binary_data=True)
        with pytest.raises(InferenceServerException, match="unexpected shape") as refused:
            client.infer(local.entry, [short])
        assert refused.value.status() == "400"
        client.close()
    finally:
        triton.stop()
