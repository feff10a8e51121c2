"""Probabilistic forecasts: P10 and P90 around the point forecast (P50), from the point model's out-of-sample errors.

P50 is the forecast the point model makes (FORECAST). P10 and P90 of forecast hour h are

    P10[h] = P50[h] + low[h]  * max(|P50[h]|, floor)
    P90[h] = P50[h] + high[h] * max(|P50[h]|, floor)

with per-customer offsets `low` <= 0 <= `high` (so P10 <= P50 <= P90 always) estimated here from the relative
errors (actual - forecast) / max(|forecast|, floor) of the trained model's forecasts over the validation week
(forecaster.Validation: the week before the held-out tail, never a training target). `floor` is 5 % of the
customer's mean reading, as in the training loss, so that near-zero forecasts get an interval, not a point.

Seven daily origins give 7 errors per forecast hour: too few for a 10 % quantile of its own. So the quantiles are
pooled over the customer's hours (168 errors), taken at the split-conformal level ceil((n + 1) q) / n (a finite
sample's empirical quantile covers less than q out of sample), and spread per hour by the customer's own profile:
the mean absolute deviation from the pooled median of the hour and its NEIGHBOURS either side (35 errors) over
the customer's mean, shrunk towards 1 with the weight of SHRINK errors. Everything is per customer: a
customer's interval never depends on which other customers were trained with it.

This works from `forecaster.predict`, the function evaluation scores and the ONNX graph reproduces, so it holds
for any point model behind it. The served graph computes the same arithmetic (pipelines/packaging/onnx_export.py
`with_intervals`); evaluation scores coverage and pinball loss on the held-out tail (pipelines/steps/evaluate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from modelgate.model_repository import HORIZON, WINDOW
from pipelines.steps import forecaster, series

LOW, HIGH = 0.1, 0.9  # the served quantiles besides P50: an 80 % interval
QUANTILES = (LOW, 0.5, HIGH)
FLOOR_SHARE = 0.05  # of the customer's mean reading: the smallest |P50| an interval is scaled from
SHRINK = 7.0  # errors' worth of weight pulling each hour's spread profile towards flat
NEIGHBOURS = 2  # forecast hours either side whose errors shape an hour's spread too
MIN_ERRORS = 24  # fewer observed validation errors: the customer's interval comes from its training spread
_Z90 = 1.2815515655446004  # standard normal 90 % quantile (the fallback's interval)


@dataclass
class Intervals:
    """Per-customer interval offsets of C customers (float32 tensors, stored in the model artifact)."""

    low: torch.Tensor  # [C, HORIZON] relative offset of P10, <= 0
    high: torch.Tensor  # [C, HORIZON] relative offset of P90, >= 0
    floor: torch.Tensor  # [C] reading units: offsets scale max(|P50|, floor)

    def select(self, index: torch.Tensor | slice) -> Intervals:
        return Intervals(self.low[index], self.high[index], self.floor[index])

    def tensors(self) -> list[torch.Tensor]:
        return [self.low, self.high, self.floor]

    def __post_init__(self) -> None:
        count = len(self.floor)
        if self.low.shape != (count, HORIZON) or self.high.shape != (count, HORIZON):
            raise ValueError(f"interval offsets must be [{count}, {HORIZON}], got {tuple(self.low.shape)}")
        if bool((self.low > 0).any() | (self.high < 0).any() | ~(self.floor > 0).all()):
            raise ValueError("interval offsets need low <= 0 <= high and a positive floor")


def floor_of(mean: torch.Tensor) -> torch.Tensor:
    return (FLOOR_SHARE * mean.abs() + 1e-6).to(torch.float32)


def bounds(p50: np.ndarray, low: np.ndarray, high: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P10, P90) for point forecasts p50 [..., HORIZON] of one customer (low/high [HORIZON], floor scalar) or of
    C customers ([C, ..., HORIZON] with low/high [C, HORIZON], floor [C]): the served graph's arithmetic, in
    float32. NaN forecasts give NaN bounds."""
    p50 = np.asarray(p50, np.float32)
    low, high, floor = (np.asarray(a, np.float32) for a in (low, high, floor))
    if low.ndim == 2:  # per customer: broadcast over the middle dimensions
        middle = (1,) * (p50.ndim - 2)
        low, high = low.reshape(len(low), *middle, HORIZON), high.reshape(len(high), *middle, HORIZON)
        floor = floor.reshape(len(floor), *middle, 1)
    scale = np.maximum(np.abs(p50), floor)
    return p50 + low * scale, p50 + high * scale


def _conformal_level(q: float, n: np.ndarray) -> np.ndarray:
    """The empirical quantile level that covers q out of sample (split conformal): ceil((n + 1) q) / n for the
    upper tail, mirrored for the lower; clipped to [0, 1]."""
    n = np.maximum(n, 1)
    if q >= 0.5:
        return np.minimum(np.ceil((n + 1) * q) / n, 1.0)
    return np.maximum(1.0 - np.ceil((n + 1) * (1 - q)) / n, 0.0)


def estimate(forecast: np.ndarray, actual: np.ndarray, floor: np.ndarray, fallback: np.ndarray) -> Intervals:
    """Offsets from validation forecasts and actuals [C, K, HORIZON] (NaN actual = no reading), `floor` [C] and
    `fallback` [C]: the relative spread (std / mean) used where a customer has fewer than MIN_ERRORS errors."""
    forecast, actual = np.asarray(forecast, np.float64), np.asarray(actual, np.float64)
    floor = np.asarray(floor, np.float64)
    count = len(forecast)
    scale = np.maximum(np.abs(forecast), floor[:, None, None])
    errors = (actual - forecast) / scale  # NaN where there is no reading
    flat = errors.reshape(count, -1)
    n = (~np.isnan(flat)).sum(1)
    low = np.full((count, HORIZON), np.nan)
    high = np.full((count, HORIZON), np.nan)
    for c in range(count):  # a per-customer loop over a few numbers each: microseconds, bounded by the shard
        observed = flat[c][~np.isnan(flat[c])]
        if n[c] < MIN_ERRORS:
            low[c], high[c] = -_Z90 * fallback[c], _Z90 * fallback[c]
            continue
        median = float(np.median(observed))
        lo = float(np.quantile(observed, _conformal_level(LOW, n[c])))
        hi = float(np.quantile(observed, _conformal_level(HIGH, n[c])))
        deviation = np.abs(errors[c] - median)  # [K, HORIZON]
        # Each hour's spread from its own and its neighbours' errors (NEIGHBOURS either side: 35 errors, not 7),
        # over the customer's mean spread, shrunk towards flat by SHRINK errors' weight.
        counts = _neighbourhood((~np.isnan(deviation)).sum(0).astype(np.float64))
        sums = _neighbourhood(np.nansum(deviation, 0))
        mean_deviation = float(np.nanmean(deviation))
        own = sums / np.maximum(counts, 1) / max(mean_deviation, 1e-12)
        profile = (counts * own + SHRINK) / (counts + SHRINK) if mean_deviation > 0 else np.ones(HORIZON)
        low[c] = median + (lo - median) * profile
        high[c] = median + (hi - median) * profile
    return Intervals(
        low=torch.as_tensor(np.minimum(low, 0.0), dtype=torch.float32),
        high=torch.as_tensor(np.maximum(high, 0.0), dtype=torch.float32),
        floor=torch.as_tensor(floor, dtype=torch.float32),
    )


def _neighbourhood(per_hour: np.ndarray) -> np.ndarray:
    """Sums over each hour and its NEIGHBOURS either side (fewer at the horizon's ends)."""
    width = 2 * NEIGHBOURS + 1
    return np.convolve(per_hour, np.ones(width), mode="same")


def origin_forecasts(
    models: forecaster.TrainedModels,
    data: series.SeriesSet,
    start: torch.Tensor,
    days: int,
    params: forecaster.ForecasterParameters | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The models' forecasts from daily origins: `data` padded (forecaster.padded) and in the models' customer
    order, `start` [C] the column of each customer's first origin. Returns (windows [C, K, WINDOW], actual and
    forecast [C, K, HORIZON]), each forecast made by forecaster.predict from the WINDOW hours before its origin."""
    values = torch.as_tensor(data.values)
    origins = start[:, None] + HORIZON * torch.arange(days)  # [C, K]
    rows = torch.arange(len(data))[:, None, None]
    windows = values[rows, origins[..., None] - WINDOW + torch.arange(WINDOW)]
    actual = values[rows, origins[..., None] + torch.arange(HORIZON)]
    chosen = models.params if params is None else params
    return windows, actual, forecaster.predict(chosen, windows, models.mean, models.std)


def fit(models: forecaster.TrainedModels, data: series.SeriesSet) -> Intervals:
    """Interval offsets of `models` from their forecasts over the validation week of `data` (the unpadded series
    they were trained on; any customer order, extra customers ignored)."""
    hp = models.hyperparameters
    if not models.customers:
        return Intervals(torch.zeros(0, HORIZON), torch.zeros(0, HORIZON), torch.zeros(0))
    data = forecaster.padded(data.subset([data.customers.index(c) for c in models.customers]))
    start = torch.as_tensor(data.lengths - hp.holdout_hours - hp.validation_hours)
    # The week's errors of the models as fitted before it (the served ones were refitted with it: in sample).
    _, actual, forecast = origin_forecasts(
        models, data, start, hp.validation_hours // HORIZON, params=models.validation_params
    )
    floor = floor_of(models.mean)
    spread = (models.std / torch.maximum(models.mean.abs(), floor)).numpy()
    return estimate(forecast.numpy(), actual.numpy(), floor.numpy(), spread)


def attach(models: forecaster.TrainedModels, data: series.SeriesSet) -> forecaster.TrainedModels:
    """`models` with the interval offsets `fit` estimates (the training step calls this after training)."""
    models.intervals = fit(models, data)
    return models


def pinball(forecast: np.ndarray, actual: np.ndarray, q: float) -> float:
    """Mean pinball (quantile) loss of quantile q over the hours with a reading, in reading units."""
    error = np.asarray(actual, np.float64) - np.asarray(forecast, np.float64)
    keep = ~np.isnan(error)
    return float(np.mean(np.maximum(q * error[keep], (q - 1) * error[keep]))) if keep.any() else math.nan


def coverage(p10: np.ndarray, p90: np.ndarray, actual: np.ndarray) -> float:
    """Share of the hours with a reading that lie inside [P10, P90] (bounds included)."""
    keep = ~np.isnan(actual)
    inside = (p10[keep] <= actual[keep]) & (actual[keep] <= p90[keep])
    return float(inside.mean()) if keep.any() else math.nan
