"""P10/P90 from the point model's validation errors (pipelines/steps/quantiles.py): coverage and pinball loss
computed as defined, the interval always in order around P50, calibrated on errors of a known distribution,
per hour where the spread differs by hour, and one customer's interval independent of the others'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelgate.evaluation_report import EvaluationReport
from modelgate.model_repository import HORIZON
from pipelines.steps import quantiles
from pipelines.steps.evaluate import Forecasts, customer_scores


def test_coverage_counts_readings_inside_the_bounds_inclusive_and_leaves_gaps_out():
    actual = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])
    p10, p90 = np.full(6, 2.0), np.full(6, 4.0)
    # 2, 3 and 4 are inside (bounds count), 1 and 5 outside, the gap is no hour: 3 of 5 (not 3/6, not 1/5).
    assert quantiles.coverage(p10, p90, actual) == pytest.approx(0.6)


def test_pinball_loss_weighs_under_and_over_forecasts_by_the_quantile():
    actual = np.array([10.0, 10.0, np.nan])
    forecast = np.array([8.0, 12.0, 0.0])  # 2 under, 2 over, a gap
    assert quantiles.pinball(forecast, actual, 0.9) == pytest.approx((0.9 * 2 + 0.1 * 2) / 2)
    assert quantiles.pinball(forecast, actual, 0.1) == pytest.approx((0.1 * 2 + 0.9 * 2) / 2)
    assert quantiles.pinball(np.array([9.0, 9.0, 0.0]), actual, 0.9) == pytest.approx(0.9)
    assert quantiles.pinball(np.array([9.0, 9.0, 0.0]), actual, 0.5) == pytest.approx(0.5)


def test_the_evaluation_scores_the_interval_per_customer_and_means_it_over_customers():
    actual = np.array([[[10.0] * 12 + [20.0] * 12], [[5.0] * 24]], np.float32)  # [C=2, K=1, 24]
    model = actual.copy()
    p10, p90 = actual - 1, actual + 1
    p90[0, 0, :6] = 9.0  # 6 of c1's 24 readings above its P90: coverage 0.75, P90 pinball 0.1 * 1 on 6 hours
    forecasts = Forecasts(("c1", "c2"), actual, model, {"peer": model}, np.zeros((2, 168)),
                          np.zeros(2, np.int64), p10=p10, p90=p90)  # fmt: skip
    scores, _ = customer_scores(forecasts)
    one, two = (s.interval for s in scores)
    assert one.coverage == pytest.approx(0.75)
    assert two.coverage == pytest.approx(1.0)
    assert one.pinball_p10 == pytest.approx(0.1)  # every reading 1 above P10
    assert one.pinball_p50 == pytest.approx(0.0)
    assert one.pinball_p90 == pytest.approx((6 * 0.9 * 1 + 18 * 0.1 * 1) / 24)
    report = EvaluationReport.from_scores(model_package_group="g", window=168, horizon=24, holdout_hours=24,
                                          scores=scores)  # fmt: skip
    assert report.aggregate.interval.coverage == pytest.approx(0.875)  # the mean over customers
    assert report.regression_metrics()["regression_metrics"]["interval_coverage"]["value"] == pytest.approx(0.875)


def _errors(rng, customers, days, sigma_by_hour):
    forecast = rng.uniform(50, 150, size=(customers, days, HORIZON))
    relative = rng.normal(size=(customers, days, HORIZON)) * sigma_by_hour
    return forecast, forecast * (1 + relative)


def test_offsets_cover_eighty_percent_out_of_sample_and_follow_the_hourly_spread():
    """Errors of a known distribution (relative, normal, twice as wide in the afternoon): offsets estimated on
    7 days per customer hold ~80 % of fresh readings, and afternoon intervals are wider than morning ones."""
    rng = np.random.default_rng(15)
    sigma = np.where(np.arange(HORIZON) < 12, 0.05, 0.10)
    forecast, actual = _errors(rng, 400, 7, sigma)
    floor = np.full(400, 5.0)
    intervals = quantiles.estimate(forecast, actual, floor, fallback=np.full(400, 0.1))
    fresh_forecast, fresh_actual = _errors(rng, 400, 7, sigma)
    p10, p90 = quantiles.bounds(fresh_forecast, *(t.numpy() for t in intervals.tensors()))
    assert quantiles.coverage(p10, p90, fresh_actual) == pytest.approx(0.8, abs=0.025)
    width = (intervals.high - intervals.low).mean(0)
    assert width[16:].mean() > 1.6 * width[:8].mean()  # the true ratio is 2; shrinkage keeps most of it
    # Near the true normal quantiles (+-1.28 sigma), not the raw 7-sample ones per hour.
    assert float(intervals.high[:, 12:].median()) == pytest.approx(1.2816 * 0.10, rel=0.2)


def test_the_interval_is_always_in_order_around_the_point_forecast():
    """Biased models (every reading above the forecast), negative and near-zero forecasts: P10 <= P50 <= P90."""
    rng = np.random.default_rng(3)
    forecast = rng.normal(0, 3, size=(5, 7, HORIZON))
    actual = forecast + rng.normal(0, 1, size=forecast.shape)
    actual[0] = forecast[0] + np.abs(actual[0] - forecast[0]) + 0.5  # biased low: every error positive
    intervals = quantiles.estimate(forecast, actual, np.full(5, 0.1), fallback=np.full(5, 0.3))
    assert (intervals.low <= 0).all()
    assert (intervals.high >= 0).all()
    assert (intervals.low[0] == 0).any()  # the biased customer's P10 is clamped to its P50, not above it
    served = rng.normal(0, 5, size=(5, 64, HORIZON)).astype(np.float32)
    served[:, :4] = 0.0
    p10, p90 = quantiles.bounds(served, *(t.numpy() for t in intervals.tensors()))
    assert (p10 <= served).all()
    assert (served <= p90).all()
    assert (p90[1:, :4] > p10[1:, :4]).all()  # a zero forecast still gets an interval (the floor)


def test_a_customer_with_too_few_validation_readings_gets_its_training_spread():
    forecast = np.full((2, 7, HORIZON), 10.0)
    actual = forecast * 1.1
    actual[1, :, :] = np.nan
    actual[1, 0, : quantiles.MIN_ERRORS - 1] = 10.0
    intervals = quantiles.estimate(forecast, actual, np.full(2, 0.5), fallback=np.array([0.2, 0.2]))
    assert torch.allclose(intervals.high[1], torch.full((HORIZON,), 1.2815516 * 0.2))
    assert torch.allclose(intervals.low[1], -intervals.high[1])


def test_a_customers_interval_does_not_depend_on_the_others():
    rng = np.random.default_rng(8)
    forecast, actual = _errors(rng, 3, 7, np.full(HORIZON, 0.1))
    actual[1, 2, 5:9] = np.nan
    together = quantiles.estimate(forecast, actual, np.full(3, 5.0), np.full(3, 0.1))
    alone = quantiles.estimate(forecast[1:2], actual[1:2], np.full(1, 5.0), np.full(1, 0.1))
    for mine, theirs in zip(together.select(slice(1, 2)).tensors(), alone.tensors(), strict=True):
        assert torch.equal(mine, theirs)


def test_offsets_out_of_order_are_refused():
    with pytest.raises(ValueError, match="low <= 0 <= high"):
        quantiles.Intervals(torch.full((1, HORIZON), 0.1), torch.ones(1, HORIZON), torch.ones(1))
