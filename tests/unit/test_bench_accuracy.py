"""The accuracy bench's development protocol never reads the test protocol's held-out periods, and design
variants are compared on it only (bench/bench_accuracy.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import __main__ as bench_main
from bench import bench_accuracy
from pipelines.steps import forecaster, series

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
    # The real series: the test protocol holds out its last 4 weeks; dev sees only the weeks before them, as
    # rolling folds each cut at its held-out week's end.
    real = bench_accuracy.taylor()
    taylor_test_start = bench_accuracy.first_held_out_hour(real, bench_accuracy.TAYLOR_HOLDOUT)
    assert last_hour(dev_taylor.data) == taylor_test_start
    folds = dev_taylor.data
    assert folds.values.shape[1] == real.lengths[0] - bench_accuracy.TAYLOR_HOLDOUT
    assert folds.lengths.tolist() == [7 * 24 * week for week in bench_accuracy.TAYLOR_DEV_FOLDS]
    for row, length in enumerate(folds.lengths):
        np.testing.assert_array_equal(folds.values[row, :length], real.values[0, :length])
        assert np.isnan(folds.values[row, length:]).all()
    assert dev_taylor.holdout == bench_accuracy.TAYLOR_DEV_HOLDOUT == 7 * 24
    assert dev_taylor.folds
    assert dev_taylor.sample == len(bench_accuracy.TAYLOR_DEV_FOLDS)


def test_a_global_peer_is_fitted_per_fold_so_no_fold_sees_another_folds_held_out_week(monkeypatch):
    # Two folds of one series: the later fold's training holds the earlier fold's held-out week.
    week = 7 * 24
    values = np.arange(1, 4 * week + 1, dtype=np.float32)
    early = np.where(np.arange(4 * week) < 3 * week, values, np.nan)
    data = series.SeriesSet(("early", "late"), np.stack([early, values]), np.array([3 * week, 4 * week]),
                            np.zeros(2, dtype=np.int64))  # fmt: skip
    seen = []

    def lightgbm(part, origins, holdout, objective):
        seen.append(part.lengths.tolist())
        return np.zeros((len(part), origins.shape[1], 24), dtype=np.float32)

    monkeypatch.setattr(bench_accuracy, "_lightgbm", lightgbm)
    monkeypatch.setattr(bench_accuracy, "_statsforecast", lambda part, origins, *a: np.zeros((*origins.shape, 24)))
    origins = bench_accuracy._origins(data, week)
    everyone, _ = bench_accuracy._peers(data, week, 1, lightgbm=True, folds=True)
    assert seen == [[3 * week], [4 * week]] * 2  # each fold alone, for L1 and L2
    assert everyone[0].forecasts.shape == (2, *origins.shape[1:], 24)
    seen.clear()
    bench_accuracy._peers(data, week, 1, lightgbm=True, folds=False)
    assert seen == [[3 * week, 4 * week]] * 2  # independent customers: one global model


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


def test_the_rule_picks_the_lowest_worst_ratio_prefers_current_on_a_tie_and_drops_the_costly():
    def tables(*ratios, cpu=0.5):
        return [{"mape": m, "rmse": r, "cpu": cpu} for m, r in ratios]

    summary = {
        "current": tables((0.95, 0.97), (1.20, 1.10)),
        "cheaper-tie": tables((0.90, 0.90), (1.198, 1.0)),  # within TIE of the best: not enough to change
        "better": tables((0.96, 0.99), (1.10, 1.05)),
        "best-but-costly": tables((0.90, 0.90), (1.00, 1.00), cpu=0.8),  # 1.6 x current's CPU
    }
    assert bench_accuracy.choose(summary) == "better"
    summary["better"] = tables((0.96, 0.99), (1.199, 1.05))
    assert bench_accuracy.choose(summary) == "current"


def test_the_rule_drops_a_variant_the_short_history_condition_would_refuse():
    def tables(*ratios):
        return [{"mape": m, "rmse": r, "cpu": 0.5} for m, r in ratios]

    summary = {"current": tables((0.95, 0.97), (1.20, 1.10)), "better": tables((0.96, 0.99), (1.10, 1.05))}
    assert bench_accuracy.choose(summary, {"current": 0.99, "better": 1.0}) == "better"  # at the gate: in
    assert bench_accuracy.choose(summary, {"current": 0.99, "better": 1.01}) == "current"
    # None passes: the short-history ratio joins the worst ratio (better: 1.10 -> 1.30; current: 1.20).
    assert bench_accuracy.choose(summary, {"current": 1.02, "better": 1.30}) == "current"
    assert bench_accuracy.choose(summary, {"current": 1.02, "better": 1.04}) == "better"


def test_the_cpu_comparison_runs_alone_and_reports_both_thread_budgets(monkeypatch):
    for argv in (["accuracy", "--cpu", "--dev"], ["training", "--cpu"], ["accuracy", "--baseline", "main"]):
        with pytest.raises(SystemExit):
            bench_main.main(argv)
    # The arms on tiny stand-ins (their CPU is whatever it is): the rows and the headline's thread budget.
    data = series_set(3, 24 * 60, first_hour=0)
    monkeypatch.setattr(bench_accuracy, "generated", lambda customers: data)
    monkeypatch.setattr(bench_accuracy, "QUICK_CUSTOMERS", 3)
    fits = []

    def fake_ours(subset, holdout, validation_hours, fit):
        fits.append(torch.get_num_threads())
        return bench_accuracy.Method("ours", np.zeros(1), 2.0 * len(subset), len(subset)), None

    monkeypatch.setattr(bench_accuracy, "_ours", fake_ours)
    monkeypatch.setattr(bench_accuracy, "_lightgbm", lambda *args: None)
    monkeypatch.setattr(bench_accuracy, "_cpu", lambda fn: (fn(), 1.0))
    monkeypatch.setattr(forecaster, "train", lambda *args, **kwargs: None)
    result = bench_accuracy.cpu_comparison(quick=True)
    labels = [what for what, _ in result.rows]
    assert any(label.startswith("1 thread each: ModelGate / LightGBM L1") for label in labels)
    assert sum(label.endswith("(median of the rounds' ratios)") for label in labels) == 2  # both budgets
    assert fits[:3] == [1, 1, 1]  # warm-up and the rounds at one thread first
    assert result.ratio == pytest.approx((2.0 * 1000) / (1.0 * 1000 / 3))  # 2 s per series vs 1 s per 3


def test_leading_members_are_compared_by_kind_and_rank_not_by_index():
    # A tree with one more fixed candidate numbers its fitted ones one later: the same members, other indices.
    before = bench_accuracy.leading_members(torch.tensor([0, 3, 8, 9, 20]), fixed=8)
    after = bench_accuracy.leading_members(torch.tensor([0, 3, 9, 10, 21]), fixed=9)
    assert before == after == [("fixed", 0), ("fixed", 3), ("fitted", 0), ("fitted", 1), ("fitted", 12)]
    assert bench_accuracy.leading_members(torch.tensor([8]), fixed=9) == [("fixed", 8)]  # the new fixed one
    assert bench_accuracy.fixed_count(forecaster) == len(forecaster.fixed_priors())
