"""The accuracy bench's development protocol never reads the test protocol's held-out periods, and design
variants are compared on it only (bench/bench_accuracy.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import __main__ as bench_main
from bench import bench_accuracy
from modelgate.model_repository import WINDOW
from pipelines.steps import evaluate, forecaster, series

HOUR = series.HOUR_US


def series_set(customers: int, hours: int, first_hour: int) -> series.SeriesSet:
    values = np.arange(customers * hours, dtype=np.float32).reshape(customers, hours) + 1
    starts = np.full(customers, first_hour * HOUR, dtype=np.int64)
    return series.SeriesSet(tuple(f"c{i}" for i in range(customers)), values, np.full(customers, hours), starts)


def last_hour(data: series.SeriesSet) -> int:
    """The hour (us since the epoch) after each series' last reading, latest of all: the data ends before it."""
    return int((data.starts + data.lengths * HOUR).max())


def test_before_leaves_no_reading_at_or_after_the_cut_and_trims_the_series():
    data = series_set(3, 100, first_hour=1_000)
    data.values[1, 55:] = np.nan  # a series whose readings stop earlier (an outage at its end)
    data = series.SeriesSet(data.customers, data.values, data.lengths, data.starts + np.array([0, 0, 70]) * HOUR)

    cut = bench_accuracy.before(data, (1_000 + 60) * HOUR)

    assert cut.customers == ("c0", "c1")  # c2 starts at hour 1,070: nothing before the cut
    assert cut.lengths.tolist() == [60, 55]
    assert cut.values.shape == (2, 60)
    assert last_hour(cut) <= (1_000 + 60) * HOUR
    np.testing.assert_array_equal(cut.values[0], data.values[0, :60])
    assert not np.shares_memory(cut.values, data.values)


def test_the_dev_data_ends_before_the_test_periods_first_hour(monkeypatch):
    # A generator that ignores the days asked for (as a mistake in DEV_DAYS would): the cut must still hold.
    calendar = int(np.datetime64(bench_accuracy.GENERATED_START, "us").astype(np.int64)) // HOUR
    full = series_set(4, bench_accuracy.GENERATED_DAYS * 24, calendar)
    asked = []
    monkeypatch.setattr(bench_accuracy, "generated", lambda customers, *args: asked.append(args) or full)

    dev_generated, dev_taylor = bench_accuracy.datasets(dev=True, customers=4, sample=2)

    assert asked == [(bench_accuracy.DEV_SEED, bench_accuracy.DEV_DAYS)]
    assert bench_accuracy.DEV_SEED != bench_accuracy.TEST_SEED
    generated_test_start = bench_accuracy.first_held_out_hour(full, bench_accuracy.GENERATED_HOLDOUT)
    assert generated_test_start == bench_accuracy.generated_test_start()
    assert last_hour(dev_generated.data) <= generated_test_start - 7 * 24 * HOUR
    # The real series: the test protocol holds out its last 4 weeks; dev sees only the weeks before them.
    real = bench_accuracy.taylor()
    taylor_test_start = bench_accuracy.first_held_out_hour(real, bench_accuracy.TAYLOR_HOLDOUT)
    assert last_hour(dev_taylor.data) == taylor_test_start
    assert dev_taylor.data.values.shape[1] == real.lengths[0] - bench_accuracy.TAYLOR_HOLDOUT
    np.testing.assert_array_equal(dev_taylor.data.values[0], real.values[0, : dev_taylor.data.values.shape[1]])
    assert dev_taylor.holdout == bench_accuracy.TAYLOR_DEV_HOLDOUT


def test_variants_run_on_the_dev_protocol_only():
    with pytest.raises(ValueError, match="dev protocol only"):
        bench_accuracy.run(variants="all")
    with pytest.raises(SystemExit):
        bench_main.main(["accuracy", "--variant", "top-1"])
    with pytest.raises(SystemExit):
        bench_main.main(["training", "--dev"])
    with pytest.raises(ValueError, match="unknown variant"):
        bench_accuracy.parse_variants("top-1,top-7")


def test_a_variant_sets_the_forecaster_constants_for_the_run_only():
    combined = bench_accuracy.parse_variants("top-5+spans-few")["top-5+spans-few"]
    before = forecaster.TOP, forecaster.DEVIATION_SPANS, forecaster.design()[1].shape
    with bench_accuracy.variant(combined) as validation_hours:
        assert (forecaster.TOP, forecaster.DEVIATION_SPANS) == (5, (1, 24, 168))
        assert forecaster.design()[1].shape[1] == 3 + 24  # the spans' columns, then each of the last 24 hours
        assert validation_hours == forecaster.Hyperparameters.validation_hours
    assert (forecaster.TOP, forecaster.DEVIATION_SPANS, forecaster.design()[1].shape) == before
    with bench_accuracy.variant(bench_accuracy.VARIANTS["validation-2-weeks"]) as validation_hours:
        assert validation_hours == 2 * 7 * 24


def test_validation_errors_are_the_evaluation_steps_mape_and_rmse():
    """The selection criterion scores candidates with the metrics evaluation judges them by."""
    generator = torch.Generator().manual_seed(5)
    hours = WINDOW + 7 * 24
    readings = 10 + torch.rand(2, hours, generator=generator) * 5
    readings[0, WINDOW + 3 : WINDOW + 9] = float("nan")  # gaps in the validation week are not scored
    readings[1, WINDOW + 30] = 0.0  # a zero reading counts in RMSE, not in MAPE
    mean, std = readings.nanmean(1), torch.full((2,), 2.0)
    validation = forecaster.Validation(readings, mean, std, torch.tensor([WINDOW, WINDOW]), 7 * 24)
    params = forecaster.linear_parameters(torch.zeros(2, 24, forecaster.design()[2].shape[-1]).double(), 4)

    mape, rmse = validation.errors(params)

    actual = readings[:, WINDOW:].reshape(2, 7, 24).numpy()
    forecast = (forecaster.forward(params, validation.windows) * 2.0 + mean[:, None, None]).numpy()
    for c in range(2):
        observed = ~np.isnan(actual[c])
        expected = evaluate._scores(forecast[c], actual[c], observed, observed & (actual[c] != 0))
        assert mape[c].item() == pytest.approx(expected.mape, rel=1e-5)
        assert rmse[c].item() == pytest.approx(expected.rmse, rel=1e-5)


def test_selection_by_mape_and_rmse_weighs_both_relative_to_the_prior(monkeypatch):
    hours = WINDOW + 7 * 24
    readings = 10 + torch.sin(torch.arange(hours) / 3.0)[None, :].repeat(1, 1)
    validation = forecaster.Validation(readings, readings.mean(1), torch.ones(1), torch.tensor([WINDOW]), 7 * 24)
    size = forecaster.design()[2].shape[-1]
    prior = forecaster.linear_parameters(torch.zeros(1, 24, size).double(), 4)
    shifted = torch.zeros(1, 24, size).double()
    shifted[..., -1] = 0.5  # a constant offset: worse on both metrics
    candidates = [prior, forecaster.linear_parameters(shifted, 4)]
    (mape_prior, rmse_prior), (mape_shifted, rmse_shifted) = (validation.errors(c) for c in candidates)

    monkeypatch.setattr(forecaster, "SELECTION", "mape+rmse")
    scores, mapes = validation.scores(candidates)

    assert scores[0, 0].item() == pytest.approx(2.0)
    assert scores[0, 1].item() == pytest.approx((mape_shifted / mape_prior + rmse_shifted / rmse_prior).item())
    assert torch.equal(mapes, torch.stack([mape_prior, mape_shifted], 1))
    monkeypatch.setattr(forecaster, "SELECTION", "rmse only")
    with pytest.raises(ValueError, match="SELECTION"):
        validation.scores(candidates)
