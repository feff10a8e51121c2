"""MSTL with a fixed simple-exponential-smoothing level, as one linear map of the window, in numpy only.

statsforecast's `MSTL(season_length=[24, 168], trend_forecaster=SimpleExponentialSmoothing(alpha=a))` forecast is
a linear map of the window: non-robust STL is a chain of loess smoothers whose weights depend only on positions,
the moving averages are linear, and SES with a fixed alpha is an exponentially weighted sum. So a forecaster
candidate can be exactly that forecast, folded into the served W_lin [WINDOW, HORIZON] (`forecast_map`). The
training container has numpy and torch only (statsmodels and statsforecast are dev dependencies), hence this port:
`stl` is statsmodels 0.15.0's STL (tsa/stl/_stl.pyx: `_onestp`, `_ss`, `_fts`, `_ma`, `_ess`, `_est`) without
robustness (outer_iter 0, inner_iter 5) and with all jumps 1, on a batch of columns [n, B]; each loess is built
once as a weight matrix (cached by its arguments) and applied by a matrix product. `mstl` is statsforecast
2.1.1's `mstl` (periods sorted, seasonal windows 7 + 4 * (1..k), seasonal_deg 0, iterate 2). The forecast is
composed as statsforecast's `MSTL.forecast`: each seasonal component's last period repeated over the horizon,
plus SES on the deseasonalised series (trend + remainder), whose level starts at the first value:
l_0 = y_0, l_t = alpha y_t + (1 - alpha) l_{t-1}, forecast l_{n-1} (checked against statsforecast numerically).
tests/unit/test_mstl.py checks all of it against statsmodels and statsforecast to round-off.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from modelgate.model_repository import HORIZON, WINDOW

PERIODS = (24, 168)
INNER_ITER = 5  # statsmodels' default when robust=False (and outer_iter 0)


def _est_weights(n: int, len_: int, ideg: int, xs: np.ndarray, nleft: np.ndarray, nright: np.ndarray):
    """`_est` for many target points at once: rows of loess weights over positions 1..n, and which rows are valid
    (statsmodels returns NaN, and its caller falls back, where the weights sum to <= 0)."""
    xs = np.asarray(xs, dtype=np.float64)[:, None]
    nleft, nright = np.asarray(nleft)[:, None], np.asarray(nright)[:, None]
    j = np.arange(1, n + 1, dtype=np.float64)[None, :]
    h = np.maximum(xs - nleft, nright - xs).astype(np.float64)
    if len_ > n:
        h = h + (len_ - n) // 2
    h9, h1 = 0.999 * h, 0.001 * h
    r = np.abs(j - xs)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = r / h
    u = 1.0 - u * u * u  # products, not pow: the same tricube, several times faster on [n, n]
    w = np.where(r <= h1, 1.0, u * u * u)
    w = np.where((j >= nleft) & (j <= nright) & (r <= h9), w, 0.0)
    a = w.sum(axis=1, keepdims=True)
    valid = a[:, 0] > 0
    w = w / np.where(a > 0, a, 1.0)
    if ideg > 0:
        a = (w * j).sum(axis=1, keepdims=True)
        b = xs - a
        c = (w * (j - a) ** 2).sum(axis=1, keepdims=True)
        fit = (h > 0) & (np.sqrt(c) > 0.001 * (n - 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(fit, w * (b / c * (j - a) + 1.0), w)
    return w, valid


@functools.cache
def _ess_matrix(n: int, len_: int, ideg: int) -> np.ndarray:
    """`_ess` with njump 1 as a matrix [n, n]: ys = E @ y (a row whose weights sum to <= 0 keeps y, as there)."""
    if n < 2:
        return np.eye(n)
    i = np.arange(n)
    if len_ >= n:
        nleft, nright = np.ones(n, dtype=int), np.full(n, n)
    else:
        shift = np.clip(i + 1 - (len_ + 2) // 2, 0, n - len_)
        nleft, nright = 1 + shift, len_ + shift
    w, valid = _est_weights(n, len_, ideg, i + 1, nleft, nright)
    w[~valid] = np.eye(n)[~valid]
    w.flags.writeable = False
    return w


@functools.cache
def _subseries_matrix(k: int, ns: int, ideg: int) -> np.ndarray:
    """One cycle-subseries' smoothing in `_ss` as a matrix [k + 2, k]: the loess at positions 1..k and the two
    extrapolated points at 0 and k + 1 (each falling back to its neighbour where its weights sum to <= 0)."""
    e = _ess_matrix(k, ns, ideg)
    ends, valid = _est_weights(k, ns, ideg, np.array([0, k + 1]), np.array([1, max(1, k - ns + 1)]),
                               np.array([min(ns, k), k]))  # fmt: skip
    first = ends[0] if valid[0] else e[0]
    last = ends[1] if valid[1] else e[k - 1]
    m = np.vstack([first, e, last])
    m.flags.writeable = False
    return m


def _cycle_subseries(y: np.ndarray, period: int, ns: int, ideg: int) -> np.ndarray:
    """`_ss` on a batch [n, B] -> [n + 2 * period, B]: subseries j (y[j::period]) smoothed and extended by one
    point at each end; output index m * period + j holds its m-th point."""
    n, batch = y.shape
    q, r = divmod(n, period)
    padded = np.zeros(((q + 1) * period, batch))
    padded[:n] = y
    x = padded.reshape(q + 1, period, batch)
    out = np.zeros((q + 3, period, batch))
    if r:  # subseries 0..r-1 have q + 1 points
        out[:, :r] = (_subseries_matrix(q + 1, ns, ideg) @ x[:, :r].reshape(q + 1, -1)).reshape(q + 3, r, batch)
    # subseries r..period-1 have q points
    out[: q + 2, r:] = (_subseries_matrix(q, ns, ideg) @ x[:q, r:].reshape(q, -1)).reshape(q + 2, period - r, batch)
    return out.reshape((q + 3) * period, batch)[: n + 2 * period]


def _ma(x: np.ndarray, len_: int) -> np.ndarray:
    """`_ma`: moving average of length len_ down the rows, [m, B] -> [m - len_ + 1, B]."""
    c = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    return (c[len_:] - c[:-len_]) / float(len_)


def _fts(x: np.ndarray, period: int) -> np.ndarray:
    """`_fts`: moving averages of length period, period and 3, [n + 2 * period, B] -> [n, B]."""
    return _ma(_ma(_ma(x, period), period), 3)


def default_lengths(period: int, seasonal: int) -> tuple[int, int]:
    """STL's default (trend, low_pass) lengths, as statsmodels' `STL.__init__` computes them."""
    trend = math.ceil(1.5 * period / (1 - 1.5 / seasonal))
    trend += trend % 2 == 0
    low_pass = period + 1
    low_pass += low_pass % 2 == 0
    return trend, low_pass


def _check_stl(n: int, period: int, seasonal: int) -> None:
    if not isinstance(period, int | np.integer) or period < 2:
        raise ValueError(f"period must be an integer >= 2, got {period!r}")
    if not isinstance(seasonal, int | np.integer) or seasonal < 3 or seasonal % 2 == 0:
        raise ValueError(f"seasonal must be an odd integer >= 3, got {seasonal!r}")
    if n < 2 * period:
        raise ValueError(f"the series needs at least two periods ({2 * period}), got {n}")


def stl(x: np.ndarray, period: int, seasonal: int, inner_iter: int = INNER_ITER) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels' `STL(x, period, seasonal, seasonal_deg=0).fit()` (non-robust, jumps 1, default trend and
    low-pass lengths, degree 1) on each column of x [n, B] (or a vector): (seasonal, trend), each x's shape."""
    x = np.asarray(x, dtype=np.float64)
    y = x.reshape(len(x), -1)
    n = len(y)
    _check_stl(n, period, seasonal)
    trend_len, low_pass = default_lengths(period, seasonal)
    low, smooth = _ess_matrix(n, low_pass, 1), _ess_matrix(n, trend_len, 1)
    trend = np.zeros_like(y)
    for _ in range(inner_iter):  # `_onestp`
        cycle = _cycle_subseries(y - trend, period, seasonal, 0)
        season = cycle[period : period + n] - low @ _fts(cycle, period)
        trend = smooth @ (y - season)
    return season.reshape(x.shape), trend.reshape(x.shape)


@functools.cache
def season_operator(n: int, period: int, seasonal: int, inner_iter: int = INNER_ITER) -> np.ndarray:
    """STL's seasonal component as a matrix [n, n] (`stl(x, ...)[0] == season_operator(...) @ x`): `stl` of the
    identity's columns (it is linear), cached."""
    s = stl(np.eye(n), period, seasonal, inner_iter)[0]
    s.flags.writeable = False
    return s


def seasonal_windows(count: int) -> list[int]:
    """statsforecast's (and R's forecast::mstl) default seasonal windows: 7 + 4 * (1..count)."""
    return [7 + 4 * i for i in range(1, count + 1)]


def mstl(x: np.ndarray, periods=PERIODS, iterate: int = 2, *, operator: bool = False):
    """statsforecast's `mstl` on each column of x [n, B]: (seasonal components by sorted period, the last STL's
    trend, the deseasonalised series = trend + remainder). operator=True uses `season_operator` (x is then
    typically the identity) and gives no trend."""
    x = np.asarray(x, dtype=np.float64)
    periods = sorted(periods)
    windows = seasonal_windows(len(periods))
    if len(periods) == 1:
        iterate = 1
    seas = [np.zeros_like(x) for _ in periods]
    deseas = x.copy()
    trend = None
    for _ in range(iterate):
        for i, (period, window) in enumerate(zip(periods, windows, strict=True)):
            deseas = deseas + seas[i]
            if operator:
                seas[i] = season_operator(len(x), period, window) @ deseas
            else:
                seas[i], trend = stl(deseas, period, window)
            deseas = deseas - seas[i]
    return dict(zip(periods, seas, strict=True)), trend, deseas


def ses_weights(n: int, alpha: float) -> np.ndarray:
    """statsforecast's SES forecast with a fixed alpha as weights over y_0..y_{n-1}: the level starts at y_0 and
    l_t = alpha y_t + (1 - alpha) l_{t-1}, so y_0 weighs (1 - alpha)^(n-1) and y_t alpha (1 - alpha)^(n-1-t)."""
    decay = (1.0 - alpha) ** np.arange(n - 1, -1, -1, dtype=np.float64)
    w = alpha * decay
    w[0] = decay[0]
    return w


def forecast_map(window: int = WINDOW, horizon: int = HORIZON, alpha: float = 0.9, periods=PERIODS) -> np.ndarray:
    """The MSTL + SES(alpha) forecast as a matrix [window, horizon] float64 (read-only, cached): `y @ forecast_map()`
    is statsforecast's `MSTL(season_length=list(periods), trend_forecaster=SimpleExponentialSmoothing(alpha))
    .forecast(y=y, h=horizon)["mean"]` for a window y."""
    if isinstance(periods, int | np.integer):
        periods = (periods,)
    periods = tuple(sorted(int(p) for p in periods))
    if not periods or periods[0] < 2:
        raise ValueError(f"periods must be integers >= 2, got {periods!r}")
    if not isinstance(window, int | np.integer) or window < 2 * periods[-1]:
        raise ValueError(f"window must be an integer >= 2 * the longest period ({2 * periods[-1]}), got {window!r}")
    if not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    return _forecast_map(int(window), int(horizon), float(alpha), periods)


@functools.cache
def _forecast_map(window: int, horizon: int, alpha: float, periods: tuple[int, ...]) -> np.ndarray:
    seas, _, deseas = mstl(np.eye(window), periods, operator=True)
    hours = np.arange(horizon)
    rows = ses_weights(window, alpha) @ deseas  # the level, the same for every hour ahead
    out = np.repeat(rows[:, None], horizon, axis=1)
    for period, s in seas.items():  # each seasonal component's last period, repeated
        out += s[window - period + hours % period].T
    out.flags.writeable = False
    return out
