"""Evaluation arithmetic: MAPE leaves out missing and zero readings, RMSE only missing ones, and a customer
with nothing to compare against is skipped with a reason instead of producing NaN."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.steps.evaluate import Forecasts, customer_metrics


def forecasts(actual, model, baseline) -> Forecasts:
    shape = (1, 1, 24)
    arrays = [np.array(a, dtype=np.float32).reshape(shape) for a in (actual, model, baseline)]
    return Forecasts(("c1",), *arrays, context=np.zeros((1, 168)), first_hour=np.zeros(1, dtype=np.int64))


def test_mape_and_rmse_against_the_baseline():
    actual = [2.0] * 12 + [4.0] * 12
    model = [2.2] * 12 + [4.0] * 12  # 10 % off on half the hours
    baseline = [3.0] * 12 + [4.0] * 12  # 50 % off on half the hours
    [metrics], skipped = customer_metrics(forecasts(actual, model, baseline))
    assert skipped == {}
    assert metrics.mape == pytest.approx(0.05, rel=1e-5)
    assert metrics.baseline_mape == pytest.approx(0.25, rel=1e-5)
    assert metrics.mape_ratio == pytest.approx(0.2, rel=1e-5)
    assert metrics.rmse == pytest.approx(np.sqrt(0.04 / 2), rel=1e-4)
    assert metrics.points == 24


def test_missing_hours_are_left_out_and_zero_readings_only_from_mape():
    actual = [np.nan] * 6 + [0.0] * 6 + [1.0] * 12
    model = [9.0] * 6 + [0.5] * 6 + [1.1] * 12
    [metrics], _ = customer_metrics(forecasts(actual, model, actual))
    assert metrics.points == 18
    assert metrics.mape == pytest.approx(0.1, rel=1e-5)  # zero readings have no percentage error
    assert metrics.rmse == pytest.approx(np.sqrt((6 * 0.25 + 12 * 0.01) / 18), rel=1e-4)


def test_a_customer_without_readings_to_compare_is_skipped():
    metrics, skipped = customer_metrics(forecasts([np.nan] * 24, [1.0] * 24, [1.0] * 24))
    assert metrics == []
    assert "no non-zero reading" in skipped["c1"]


def test_the_plot_shows_worst_best_median_then_the_next_worst():
    from modelgate.evaluation_report import CustomerMetrics, EvaluationReport
    from pipelines.steps.evaluate import plot_selection

    ratios = {"c1": 0.5, "c2": 1.3, "c3": 0.7, "c4": 1.1, "c5": 0.9, "c6": 0.8}
    report = EvaluationReport.from_customers(
        model_package_group="g",
        window=168,
        horizon=24,
        holdout_hours=168,
        per_customer=[CustomerMetrics(c, r / 10, 0.1, 1.0, 1.0, r, 168) for c, r in ratios.items()],
    )
    assert plot_selection(report, 4) == {"c2": "worst", "c1": "best", "c5": "median", "c4": "2. worst"}
    assert list(plot_selection(report, 5)) == ["c2", "c1", "c5", "c4", "c6"]
    assert plot_selection(report, 1) == {"c2": "worst"}
