"""Evaluation arithmetic: MAPE leaves out missing and zero readings, RMSE only missing ones, a customer
with nothing to compare against is skipped with a reason instead of producing NaN, and the baselines forecast
what their names say (the seasonal window average exactly as statsforecast's)."""

from __future__ import annotations

import numpy as np
import pytest

from modelgate.evaluation_report import SEASONAL_NAIVE_24, SEASONAL_NAIVE_168, SEASONAL_WINDOW_AVERAGE, EvaluationReport
from modelgate.model_repository import WINDOW
from pipelines.steps.evaluate import Forecasts, baseline_forecasts, customer_scores


def forecasts(actual, model, baseline) -> Forecasts:
    shape = (1, 1, 24)
    actual, model, baseline = (np.array(a, dtype=np.float32).reshape(shape) for a in (actual, model, baseline))
    return Forecasts(
        ("c1",), actual, model, {"peer": baseline}, context=np.zeros((1, 168)), first_hour=np.zeros(1, dtype=np.int64)
    )


def customer_metrics(forecasts: Forecasts):
    """The scores as the report states them (the single baseline "peer" is the best one)."""
    scores, skipped = customer_scores(forecasts)
    if not scores:
        return [], skipped
    report = EvaluationReport.from_scores(
        model_package_group="g", window=168, horizon=24, holdout_hours=24, scores=scores
    )
    return list(report.per_customer), skipped


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


def test_baselines_forecast_the_same_hour_a_day_and_a_week_earlier_and_the_four_week_mean():
    filled = np.arange(2 * WINDOW, dtype=np.float32).reshape(1, 2, WINDOW)  # reading = its own index in the window
    forecast = baseline_forecasts(filled)
    assert forecast[SEASONAL_NAIVE_24][0, 1].tolist() == list(range(2 * WINDOW - 24, 2 * WINDOW))
    assert forecast[SEASONAL_NAIVE_168][0, 0].tolist() == list(range(WINDOW - 168, WINDOW - 144))
    four_weeks = [np.mean([WINDOW + h - 168 * w for w in range(1, 5)]) for h in range(24)]
    assert forecast[SEASONAL_WINDOW_AVERAGE][0, 0].tolist() == pytest.approx(four_weeks)
    assert forecast[SEASONAL_WINDOW_AVERAGE][0, 1].tolist() == pytest.approx([f + WINDOW for f in four_weeks])


def test_the_weekly_average_is_statsforecasts_seasonal_window_average():
    from statsforecast.models import SeasonalWindowAverage

    rng = np.random.default_rng(7)
    history = rng.gamma(2.0, 1.0, size=(3, 2, WINDOW)).astype(np.float32)
    ours = baseline_forecasts(history)[SEASONAL_WINDOW_AVERAGE]
    for c in range(3):
        for k in range(2):
            theirs = SeasonalWindowAverage(season_length=168, window_size=4).forecast(
                y=history[c, k].astype(np.float64), h=24
            )["mean"]
            assert ours[c, k] == pytest.approx(theirs, rel=1e-5)
