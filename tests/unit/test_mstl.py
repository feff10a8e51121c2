"""The numpy MSTL port (pipelines/steps/mstl.py) against the libraries it ports: statsmodels' STL, statsforecast's
mstl, SES and MSTL forecast, to round-off, on random series and on a real one (Taylor's half-hourly electricity
demand, averaged to hourly)."""

from __future__ import annotations

import numpy as np
import pytest
from statsforecast.models import MSTL, SimpleExponentialSmoothing
from statsforecast.mstl import mstl as sf_mstl
from statsmodels.tsa.seasonal import STL

from bench import bench_accuracy
from modelgate.model_repository import HORIZON, WINDOW
from pipelines.steps import mstl


@pytest.fixture(scope="module")
def taylor() -> np.ndarray:
    return bench_accuracy.taylor().values[0].astype(np.float64)  # 2016 hours, GWh


def _series(kind: str, n: int, taylor: np.ndarray) -> np.ndarray:
    if kind == "random":
        return np.random.default_rng(n).normal(size=n)
    return taylor[:n]


def _close(actual, expected, tol):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("kind", ["random", "taylor"])
@pytest.mark.parametrize(("n", "period", "seasonal"), [(672, 24, 11), (672, 168, 15), (500, 24, 11), (500, 168, 15)])
def test_stl_matches_statsmodels(kind, n, period, seasonal, taylor):
    x = _series(kind, n, taylor)
    ref = STL(x, period=period, seasonal=seasonal, seasonal_deg=0).fit()
    season, trend = mstl.stl(x, period, seasonal)
    _close(season, ref.seasonal, 1e-9)
    _close(trend, ref.trend, 1e-9)
    # the batch form gives each column its own decomposition, and the operator is the same map
    batch = np.stack([x, np.random.default_rng(1).normal(size=n)], axis=1)
    season_b, trend_b = mstl.stl(batch, period, seasonal)
    _close(season_b[:, 0], ref.seasonal, 1e-9)
    _close(trend_b[:, 0], ref.trend, 1e-9)
    _close(mstl.season_operator(n, period, seasonal) @ x, ref.seasonal, 1e-9)


@pytest.mark.parametrize("n", [672, 500])
def test_mstl_matches_statsforecast(n, taylor):
    x = taylor[:n]
    ref = sf_mstl(x, [168, 24])
    seas, trend, deseas = mstl.mstl(np.stack([x, -x], axis=1), (168, 24))
    assert list(seas) == [24, 168]
    for period in (24, 168):
        _close(seas[period][:, 0], ref[f"seasonal{period}"].to_numpy(), 1e-9)
        _close(seas[period][:, 1], -ref[f"seasonal{period}"].to_numpy(), 1e-9)
    _close(trend[:, 0], ref["trend"].to_numpy(), 1e-9)
    _close(deseas[:, 0], (ref["trend"] + ref["remainder"]).to_numpy(), 1e-9)
    _, _, deseas_op = mstl.mstl(np.eye(n), (24, 168), operator=True)
    _close(x @ deseas_op.T, deseas[:, 0], 1e-9)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9, 1.0])
def test_ses_weights_match_statsforecast(alpha):
    y = np.random.default_rng(7).normal(size=50) + 3.0
    ref = SimpleExponentialSmoothing(alpha=alpha).forecast(y=y, h=3)["mean"]
    np.testing.assert_allclose(y @ mstl.ses_weights(50, alpha), ref, rtol=0, atol=1e-12)


def _reference(y, alpha, horizon=HORIZON):
    model = MSTL(season_length=[24, 168], trend_forecaster=SimpleExponentialSmoothing(alpha=alpha))
    return model.forecast(y=y, h=horizon)["mean"]


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9, 1.0])
def test_forecast_map_matches_statsforecast_mstl(alpha, taylor):
    m = mstl.forecast_map(alpha=alpha)
    assert m.shape == (WINDOW, HORIZON)
    assert m.dtype == np.float64
    windows = [taylor[start : start + WINDOW] for start in (0, 500, len(taylor) - WINDOW)]
    windows.append(np.random.default_rng(3).normal(size=WINDOW))
    for y in windows:
        _close(y @ m, _reference(y, alpha), 1e-8)


def test_forecast_map_longer_horizon_and_odd_window_wrap_the_seasons():
    y = np.random.default_rng(5).normal(size=500)
    m = mstl.forecast_map(window=500, horizon=200, alpha=0.3)
    _close(y @ m, _reference(y, 0.3, horizon=200), 1e-8)


def test_forecast_map_with_one_period_matches_statsforecast():
    # statsforecast's mstl runs one pass (iterate 1) when there is a single period
    y = np.random.default_rng(6).normal(size=200)
    ref = MSTL(season_length=24, trend_forecaster=SimpleExponentialSmoothing(alpha=0.6)).forecast(y=y, h=30)["mean"]
    _close(y @ mstl.forecast_map(window=200, horizon=30, alpha=0.6, periods=24), ref, 1e-8)


def test_each_column_sums_to_one_so_a_constant_window_forecasts_the_constant():
    for alpha in (0.1, 0.9, 1.0):
        m = mstl.forecast_map(alpha=alpha)
        np.testing.assert_allclose(m.sum(axis=0), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.full(WINDOW, 4.5) @ m, 4.5, rtol=0, atol=1e-10)


def test_forecast_map_is_cached_and_read_only():
    m = mstl.forecast_map(alpha=0.5)
    assert mstl.forecast_map(WINDOW, HORIZON, 0.5, [168, 24]) is m
    with pytest.raises(ValueError, match="read-only"):
        m[0, 0] = 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"horizon": 0}, "horizon"),
        ({"window": 335}, "window"),
        ({"window": 47, "periods": (24,)}, "window"),
        ({"periods": (1, 24)}, "periods"),
        ({"periods": ()}, "periods"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mstl.forecast_map(**kwargs)


def test_stl_rejects_bad_arguments():
    x = np.zeros(100)
    with pytest.raises(ValueError, match="seasonal"):
        mstl.stl(x, 24, 10)
    with pytest.raises(ValueError, match="period"):
        mstl.stl(x, 1, 11)
    with pytest.raises(ValueError, match="two periods"):
        mstl.stl(x, 60, 11)
