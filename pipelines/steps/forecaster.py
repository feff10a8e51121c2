"""One forecasting model per customer, all fitted at once on one device, in closed form.

Model (per customer, on readings normalised with the customer's mean and standard deviation):
    forecast = window @ W_lin + b_lin + relu(window @ W_hid + b_hid) @ W_out
The window is four weeks (WINDOW). The served graph (pipelines/packaging/onnx_export.py) keeps the ReLU
correction's shape; its weights are zero. W_lin is the seasonal window average (the mean of the same hour of the
week over the four weeks) plus a weighted ridge regression on `design`'s features: for forecast hour h, the same
hour of the week in earlier weeks, the same hour of the day on the last seven days, and the recent level's
deviation from the weekly shape (each of the last 24 hours, and averages over 1 to 168 hours), plus a constant.
Every feature is a fixed linear map of the window, so the fit folds back into one W_lin [WINDOW, HORIZON]: what is
served is exactly the model evaluated.

The fit (`train`): one pass over every training window (hourly starts) sums, per customer, forecast hour and
half-life, the normal equations X'VX, X'Vr (`NormalEquations`: r is the target minus the seasonal window
average; V weighs each hour by the squared error relative to the reading, what MAPE judges, and older windows
less by the half-life). Candidates per customer: the fixed ones (`fixed_candidates`: the seasonal window average
itself, the same plus the recent level's move over each LEVEL_CANDIDATES span, and statsforecast's MSTL(24, 168)
with an SES level of each MSTL_ALPHAS alpha: with a fixed alpha MSTL is a linear map of the window, built by
pipelines/steps/mstl.py, so the candidate is exactly it) and the ridge solutions for
every (half-life, strength) in HALF_LIVES x RIDGE_STRENGTHS, fitted on the windows before the validation week
(`Validation`). The fitted ones are scored on the validation week (SELECTION: MAPE and RMSE, each relative to
the seasonal window average's); the fixed ones, which are not fitted, on the FIXED_SCORING_WEEKS (4) weeks of
daily origins ending with it. The customer's model is the mean of its best fixed and its best fitted candidate
(COMBINE: a forecast combination, whose errors spread less than either's), the fitted one solved again with the
validation week's windows added (the most recent data). The constants were chosen on the accuracy bench's
development protocol only (`python -m bench accuracy --dev`: data that ends before the test protocol's held-out
periods; bench/RESULTS.md records the variants tried, the rule and the choice).
The held-out tail is never read. The solves are batched torch.linalg calls on [C, HORIZON, F, F]: no epochs, no
learning rate, exact.

Sharding: each customer's sums read only its own windows, chunked by fixed ranges of start hours, so a customer's
model does not depend on which other customers (or host) it was fitted with: tests/integration/test_training.py
checks this. Memory: the float64 sums per customer, forecast hour and half-life (X'VX by its blocks, about half
of F x F: `NormalEquations`; one set: the validation week's windows are summed a customer block at a time and
folded in after the candidates are solved), plus one block of BLOCK_CUSTOMERS customers' temporaries at a time
(a chunk's windows and their products for both half-lives at once, a block's systems: a few MB per block).

Short histories: windows may reach before a customer's first reading (`padded`: those hours are gaps, filled as
any leading gap), so a customer needs MIN_CONTEXT (one week) of real hours per window, not all of WINDOW.

Gaps: a window's missing hours take the last reading before them (forward fill); hours before its first reading
take the same hour of the week from the first week that has one (`fill_gaps`), or the mean when none does.
The served ONNX graph does exactly the same.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from modelgate.model_repository import HORIZON, WINDOW
from pipelines.steps import mstl
from pipelines.steps.series import HOUR_US, SeriesSet

SPAN = WINDOW + HORIZON
WEEK = 7 * 24
MIN_CONTEXT = 7 * 24  # real hours a training window must hold; the rest of WINDOW may be before the first reading
PADDING = WINDOW - MIN_CONTEXT
_M31 = 2**31
_LOW31 = _M31 - 1


@dataclass(frozen=True)
class Hyperparameters:
    # The fit is closed-form (one pass over the training windows): the Adam trainer's epochs, learning rate,
    # steps per epoch and correction hours are gone, not kept as knobs that do nothing.
    batch_size: int = 64  # training windows per customer per chunk of the pass: bounds the pass's memory
    hidden: int = 16  # width of the served graph's ReLU correction (its weights are zero: off)
    seed: int = 1
    holdout_hours: int = 7 * 24  # the tail of each series kept for evaluation
    validation_hours: int = 7 * 24  # the week before it: picks each customer's candidate, then joins the refit
    min_coverage: float = 0.5  # share of training hours that must hold a reading

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.batch_size <= 4096:
            problems.append(f"batch_size must be in 1..4096, got {self.batch_size}")
        if not 1 <= self.hidden <= 512:
            problems.append(f"hidden must be in 1..512, got {self.hidden}")
        if self.holdout_hours < HORIZON or self.holdout_hours % HORIZON:
            problems.append(f"holdout_hours must be a positive multiple of {HORIZON}, got {self.holdout_hours}")
        if self.validation_hours < HORIZON or self.validation_hours % HORIZON:
            problems.append(f"validation_hours must be a positive multiple of {HORIZON}, got {self.validation_hours}")
        if not 0 <= self.min_coverage <= 1:
            problems.append(f"min_coverage must be in [0, 1], got {self.min_coverage}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def min_hours(self) -> int:
        """A customer needs a day's worth of distinct training windows of a week plus the horizon, and the
        held-out tail (windows reaching before the first reading see gaps there: `padded`)."""
        return MIN_CONTEXT + HORIZON + 23 + self.validation_hours + self.holdout_hours


# ---- deterministic, composition-independent randomness -------------------------------------------------------


def customer_keys(customers: tuple[str, ...] | list[str], seed: int) -> torch.Tensor:
    return torch.tensor([(zlib.crc32(c.encode()) ^ (seed * 2654435761)) % _M31 for c in customers], dtype=torch.int64)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """An integer hash on [0, 2^31): every product stays below 2^63, so int64 never overflows."""
    for multiplier, increment in ((1103515245, 12345), (747796405, 289133645), (2891336453 % _M31, 1013904223)):
        x = (x * multiplier + increment) & _LOW31  # == % 2^31 for x >= 0, without an integer division
        x = x ^ (x >> 15)
    return x


def uniform(keys: torch.Tensor, *counters: int | torch.Tensor) -> torch.Tensor:
    """U[0, 1) numbers that are a pure function of (key, counters...): shape [len(keys), *tensor counters]."""
    x = keys
    for counter in counters:
        x = x.unsqueeze(-1) + counter if isinstance(counter, torch.Tensor) else x + counter
        x = _mix(x & _LOW31)
    return x.to(torch.float64) / _M31


# ---- the model -------------------------------------------------------------------------------------------------


@dataclass
class ForecasterParameters:
    """Stacked weights of C customers' models (normalised units)."""

    w_in: torch.Tensor  # [C, WINDOW, HORIZON + hidden]: W_lin | W_hid
    b_in: torch.Tensor  # [C, 1, HORIZON + hidden]
    w_out: torch.Tensor  # [C, hidden, HORIZON]

    @classmethod
    def initial(cls, keys: torch.Tensor, hidden: int, device: torch.device) -> ForecasterParameters:
        count = len(keys)
        w_lin = torch.zeros(count, WINDOW, HORIZON, dtype=torch.float64)
        hours = torch.arange(HORIZON)
        weeks = WINDOW // 168
        for week in range(weeks):  # the seasonal window average: the same hour of the week, each week
            w_lin[:, hours + 168 * week, hours] = 1.0 / weeks
        # Box-Muller normals from the hash: the same initial weights for a customer in any batch.
        u1 = uniform(keys, 1, torch.arange(WINDOW * hidden)).clamp_min(1e-12)
        u2 = uniform(keys, 2, torch.arange(WINDOW * hidden))
        normal = torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
        w_hid = normal.reshape(count, WINDOW, hidden) / math.sqrt(WINDOW)
        return cls(
            w_in=torch.cat([w_lin, w_hid], dim=2).to(device, torch.float32),
            b_in=torch.zeros(count, 1, HORIZON + hidden, device=device),
            w_out=torch.zeros(count, hidden, HORIZON, device=device),  # the correction starts at zero
        )

    def tensors(self) -> list[torch.Tensor]:
        return [self.w_in, self.b_in, self.w_out]

    def to(self, device: torch.device | str) -> ForecasterParameters:
        return ForecasterParameters(*(t.detach().to(device) for t in self.tensors()))

    def select(self, index: int | slice | torch.Tensor) -> ForecasterParameters:
        return ForecasterParameters(*(t[index] for t in self.tensors()))


def forward(params: ForecasterParameters, windows: torch.Tensor) -> torch.Tensor:
    """[C, N, WINDOW] normalised, gap-filled windows -> [C, N, HORIZON] normalised forecasts."""
    # split(), not two slices: its backward is one cat, where slices' would zero-fill and add [C, N, 40] twice.
    linear, hidden = torch.baddbmm(params.b_in, windows, params.w_in).split([HORIZON, params.w_out.shape[1]], -1)
    return torch.baddbmm(linear, torch.relu(hidden), params.w_out)


class CustomerForecaster(torch.nn.Module):
    """One customer's model as a plain module (ONNX export): window [N, WINDOW] -> forecast [N, HORIZON]."""

    def __init__(self, params: ForecasterParameters, index: int) -> None:
        super().__init__()
        self.w_in = torch.nn.Parameter(params.w_in[index].detach().cpu().clone())
        self.b_in = torch.nn.Parameter(params.b_in[index, 0].detach().cpu().clone())
        self.w_out = torch.nn.Parameter(params.w_out[index].detach().cpu().clone())

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        z = window @ self.w_in + self.b_in
        return z[:, :HORIZON] + torch.relu(z[:, HORIZON:]) @ self.w_out


def fill_gaps(windows: torch.Tensor) -> torch.Tensor:
    """Forward-fill NaNs along the last dimension. Leading NaNs (nothing to carry forward: a history shorter than
    the window) take the filled value of the same hour of the week in the first week that has a reading, so
    the seasonal weights see the weeks there are; where no such week is in the window, 0 (the mean)."""
    width = windows.shape[-1]
    positions = torch.arange(width, device=windows.device).expand_as(windows)
    observed = ~torch.isnan(windows)
    last_seen = torch.cummax(torch.where(observed, positions, 0), dim=-1).values
    filled = torch.gather(windows, -1, last_seen)
    first = observed.to(torch.uint8).argmax(-1, keepdim=True)  # the first reading (0 for a window without one)
    lead = positions < first
    source = torch.where(lead, positions + WEEK * ((first - positions + WEEK - 1) // WEEK), positions)
    filled = torch.gather(filled, -1, source.clamp_max(width - 1))
    return torch.nan_to_num(torch.where(lead & (source >= width), torch.nan, filled), nan=0.0)


def carried_forward(series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every hour of [C, T] series: the last reading at or before it (NaN if none) and that reading's age
    in hours (inf if none). A window starting at s then fills hour s + p with the carried reading when its age
    is <= p, else with 0: exactly `fill_gaps` of the window, without a cumulative scan per training step."""
    positions = torch.arange(series.shape[-1], device=series.device).expand_as(series)
    last_seen = torch.cummax(torch.where(torch.isnan(series), -1, positions), dim=-1).values
    carried = torch.gather(series, -1, last_seen.clamp_min(0))
    age = torch.where(last_seen >= 0, (positions - last_seen).to(series.dtype), torch.inf)
    return torch.where(last_seen >= 0, carried, torch.nan), age


def predict(params: ForecasterParameters, windows: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Readings [C, N, WINDOW] (NaN = gap) -> forecasts [C, N, HORIZON] in reading units: the reference the
    packaged Triton ensemble must reproduce."""
    scale = std[:, None, None]
    normalised = fill_gaps((windows - mean[:, None, None]) / scale)
    with torch.no_grad():
        return forward(params, normalised) * scale + mean[:, None, None]


# ---- training --------------------------------------------------------------------------------------------------


@dataclass
class TrainedModels:
    customers: tuple[str, ...]
    params: ForecasterParameters  # on CPU
    mean: torch.Tensor  # [C] float32, reading units
    std: torch.Tensor  # [C]
    hyperparameters: Hyperparameters
    skipped: dict[str, str] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)  # [mean per-customer validation MAPE of the model]
    # [C] each customer's leading member, the better of its model's members on the validation week (0: the
    # seasonal window average; then LEVEL_CANDIDATES, BASELINE_CANDIDATES, MSTL_ALPHAS; then HALF_LIVES x
    # RIDGE_STRENGTHS); the name is the Adam trainer's, kept for the artifact and its readers.
    chosen_epochs: torch.Tensor | None = None
    device: str = "cpu"
    seconds: float = 0.0
    # P10/P90 offsets (pipelines.steps.quantiles.Intervals), estimated after training from the point model's
    # validation errors (quantiles.attach); None until then. Kept apart from the point model on purpose.
    intervals: object | None = None
    # The same choice of candidates fitted WITHOUT the validation week (params adds it in the refit): what the
    # validation week's errors must come from for P10/P90 to be out of sample. Not part of the artifact.
    validation_params: ForecasterParameters | None = None

    def select(self, indices: list[int]) -> TrainedModels:
        """The models of the customers at `indices` (in that order)."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        chosen = None if self.chosen_epochs is None else self.chosen_epochs[index]
        honest = None if self.validation_params is None else self.validation_params.select(index)
        return TrainedModels(tuple(self.customers[i] for i in indices), self.params.select(index), self.mean[index],
                             self.std[index], self.hyperparameters, dict(self.skipped), list(self.history), chosen,
                             self.device, self.seconds,
                             None if self.intervals is None else self.intervals.select(index), honest)  # fmt: skip


def eligible(data: SeriesSet, hp: Hyperparameters) -> tuple[list[int], dict[str, str]]:
    """Customers with enough data to train and evaluate, and why the others are skipped (those whose files held
    no row too: nothing is dropped without a reason)."""
    keep, skipped = [], dict.fromkeys(data.empty, "its curated files hold no reading")
    for index, customer in enumerate(data.customers):
        length = int(data.lengths[index])
        train = data.values[index, : max(length - hp.holdout_hours, 0)]
        coverage = float(np.mean(~np.isnan(train))) if len(train) else 0.0
        if length < hp.min_hours:
            skipped[customer] = f"only {length} hours of data, need {hp.min_hours}"
        elif coverage < hp.min_coverage:
            skipped[customer] = f"only {coverage:.0%} of training hours hold a reading, need {hp.min_coverage:.0%}"
        else:
            keep.append(index)
    return keep, skipped


def normalisation(data: SeriesSet, hp: Hyperparameters) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer mean and standard deviation of the training part (never the held-out tail)."""
    columns = np.arange(data.values.shape[1])[None, :]
    train = np.where(columns < (data.lengths - hp.holdout_hours)[:, None], data.values, np.nan).astype(np.float64)
    mean = np.nanmean(train, axis=1)
    std = np.nanstd(train, axis=1)
    std = np.maximum(std, 0.01 * np.abs(mean) + 1e-6)  # a flat meter still gets a usable scale
    return mean.astype(np.float32), std.astype(np.float32)


def fingerprint(data: SeriesSet, hp: Hyperparameters) -> str:
    """Identifies a training run, for resuming from a checkpoint: same customers, data, settings, and the same
    fit: this module's source and its design constants as they are now (the accuracy bench's variants change
    them at run time), so a checkpoint of another fit is never taken for this one."""
    digest = zlib.crc32(np.ascontiguousarray(data.values).tobytes())
    digest = zlib.crc32("|".join(data.customers).encode(), digest)
    design_constants = (RIDGE_STRENGTHS, HALF_LIVES, TOP, DEVIATION_SPANS, SELECTION, LEVEL_CANDIDATES,
                        BASELINE_CANDIDATES, MSTL_ALPHAS, FITTED_PRIOR, VALIDATION_STRIDE, FIXED_SCORING_WEEKS,
                        COMBINE)  # fmt: skip
    fit = zlib.crc32(Path(mstl.__file__).read_bytes(), zlib.crc32(Path(__file__).read_bytes()))
    fit = zlib.crc32(repr((sorted(asdict(hp).items()), design_constants)).encode(), fit)
    return f"{digest:08x}-{fit:08x}"


class Checkpointer:
    """Saves training state to the checkpoint directory (SageMaker syncs /opt/ml/checkpoints with S3, so a
    spot interruption or a restarted job resumes), at most every `every_seconds`, atomically."""

    def __init__(self, directory: Path, name: str, every_seconds: float = 600.0) -> None:
        self.path = directory / f"{name}.pt"
        self.every_seconds = every_seconds
        self._last = time.monotonic()

    def load(self, expected_fingerprint: str) -> dict | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != expected_fingerprint:
            print(f"train: ignoring checkpoint {self.path}: it belongs to other data or settings", flush=True)
            return None
        return state

    def maybe_save(self, state: dict, *, force: bool = False) -> bool:
        if not force and time.monotonic() - self._last < self.every_seconds:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, self.path)
        self._last = time.monotonic()
        return True


class Validation:
    """The validation week: every customer's MAPE over its hours (daily origins from `ends`, each forecast from
    the WINDOW hours before it, gaps filled as in serving), for choosing among candidate models. Per customer,
    so a customer's choice never depends on the others."""

    def __init__(self, readings: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, ends: torch.Tensor,
                 hours: int) -> None:  # fmt: skip
        device = readings.device
        steps = torch.arange((hours - HORIZON) // VALIDATION_STRIDE + 1, device=device)
        origins = ends[:, None] + VALIDATION_STRIDE * steps  # [C, K]: forecasts that end inside the validation hours
        # An origin without WINDOW hours of the (padded) series before it is not scored (a long scoring period
        # on a short history: FIXED_SCORING_WEEKS); the validation week itself always has them (`min_hours`).
        inside = origins >= WINDOW
        origins = torch.where(inside, origins, WINDOW)
        rows = torch.arange(len(readings), device=device)[:, None, None]
        self.scale, self.shift = std[:, None, None], mean[:, None, None]
        raw = readings[rows, origins[..., None] - WINDOW + torch.arange(WINDOW, device=device)]
        self.windows = fill_gaps((raw - self.shift) / self.scale)  # [C, K, WINDOW]
        actual = readings[rows, origins[..., None] + torch.arange(HORIZON, device=device)]
        observed = ~torch.isnan(actual) & inside[..., None]
        scored = observed & (actual != 0)
        self.actual = torch.where(scored, actual, 1.0)
        self.weight = scored.float() / scored.sum((1, 2), keepdim=True).clamp_min(1)
        self.squared_weight = observed.float() / observed.sum((1, 2), keepdim=True).clamp_min(1)
        self.observed_actual = torch.nan_to_num(actual)
        self.has_points = scored.any(2).any(1)

    def errors(self, params: ForecasterParameters) -> tuple[torch.Tensor, torch.Tensor]:
        """[C] validation MAPE (over the hours with a non-zero reading) and RMSE (over the hours with a reading),
        as the evaluation step computes them."""
        with torch.no_grad():
            forecast = forward(params, self.windows) * self.scale + self.shift
        mape = ((forecast - self.actual).abs() / self.actual.abs() * self.weight).sum((1, 2))
        rmse = ((forecast - self.observed_actual).square() * self.squared_weight).sum((1, 2)).sqrt()
        return mape, rmse

    def scores(self, candidates: Iterable[ForecasterParameters]) -> tuple[torch.Tensor, torch.Tensor]:
        """[C, candidates] selection scores, lower is better, and validation MAPEs. SELECTION "mape": the score is
        the validation MAPE; "mape+rmse": MAPE and RMSE each relative to the first candidate's (the seasonal
        window average), summed, so a candidate that buys MAPE with large squared errors is not preferred. 0 for a
        customer without a non-zero validation reading: its candidates tie, and the tie goes to the first."""
        return self.rank([self.errors(c) for c in candidates])

    def rank(self, errors: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """`scores` from the candidates' `errors`, in order."""
        mape, rmse = (torch.stack(e, 1) for e in zip(*errors, strict=True))
        if SELECTION == "mape":
            score = mape
        elif SELECTION == "mape+rmse":
            score = mape / mape[:, :1].clamp_min(1e-12) + rmse / rmse[:, :1].clamp_min(1e-12)
        else:
            raise ValueError(f"SELECTION must be 'mape' or 'mape+rmse', got {SELECTION!r}")
        return torch.where(self.has_points[:, None], score, 0.0), torch.where(self.has_points[:, None], mape, 0.0)


class WindowSampler:
    """Training batches of C customers' readings [C, T] (NaN = gap), normalised with their mean and std [C]: per
    step, B windows per customer with their targets, the loss weight of each target hour and the number of
    observed target hours.

    Everything that does not change between steps is computed once here: the gap-filled series, the targets with
    gaps as 0, and the loss weight of every hour (0 for a gap), so a step is a few row copies. Windows are rows of
    strided views over the flat [C * T] series (row o holds hours o .. o + width - 1): a step builds only [C, B]
    flat offsets and copies each window as one contiguous row (index_select); a customer's windows never reach
    the next customer's hours, because starts stay below length - SPAN. A call may ask for any `block` of the
    customers (B windows each): what one call copies, and its temporaries, is set by the block, not by C.
    """

    def __init__(self, readings: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, batch_size: int,
                 block: int | None = None) -> None:  # fmt: skip
        count, hours = readings.shape
        self.batch_size = batch_size
        series = (readings - mean[:, None]) / std[:, None]
        carried, _ = carried_forward(series)
        self.carried_rows, self.raw_rows = _rows(carried, WINDOW), _rows(series, WINDOW)
        observed = ~torch.isnan(series)
        # Windows that start before a customer's first reading (every window reaching into `padded`'s hours):
        # `fill_gaps` gives their hour h before that reading the carried reading at the same hour of the week in
        # the reading's first week, an hour `ahead[h]` later: the same for every such window, so computed once
        # here, and 0 where that hour lies past the window's end. A step then copies rows instead of filling
        # each window again (with short histories that fill was two thirds of a step's time).
        positions = torch.arange(hours, device=series.device).expand_as(series)
        first = observed.to(torch.uint8).argmax(-1, keepdim=True)
        before_first = positions < first
        ahead = torch.where(before_first, WEEK * ((first - positions + WEEK - 1) // WEEK), 0)
        lead_filled = torch.gather(carried, -1, (positions + ahead).clamp_max(hours - 1))
        # `ahead` only matters against the window hours left (<= WINDOW): int16, clipped there (a copy of a
        # block's rows is then a quarter of int64's).
        ahead = ahead.clamp_max(WINDOW).to(torch.int16)
        self.lead_rows, self.ahead_rows = _rows(torch.nan_to_num(lead_filled), WINDOW), _rows(ahead, WINDOW)
        room = WINDOW - torch.arange(WINDOW, device=series.device)  # window hours left from each position
        self.room = room.to(torch.int16)
        self.before_first = before_first.reshape(-1)
        self.gap_after_first = ~observed.reshape(-1) & ~self.before_first
        # Loss weight: a normalised error times std / |reading| is the error relative to the reading (MAPE, what
        # evaluation judges); readings below 5 % of the customer's mean count as 5 % of it, so that near-zero
        # hours do not dominate; gaps weigh 0 (and their targets are 0).
        floor = (0.05 * mean.abs() + 1e-6)[:, None]
        weight = torch.where(observed, std[:, None] / torch.maximum(torch.nan_to_num(readings).abs(), floor), 0.0)
        self.target_rows, self.weight_rows = _rows(torch.nan_to_num(series), HORIZON), _rows(weight, HORIZON)
        # Observed hours of the target starting at every flat offset (an int64 cumulative sum: exact at any size).
        cumulative = torch.cumsum(observed.reshape(-1).long(), 0)
        cumulative = torch.cat([cumulative.new_zeros(1), cumulative, cumulative[-1:].expand(HORIZON)])
        self.observed_ahead = (cumulative[HORIZON:-1] - cumulative[: -HORIZON - 1]).to(torch.uint8)  # <= HORIZON
        self.row_of_customer = (torch.arange(count, device=series.device) * hours)[:, None]
        # reused every call: up to `block` customers' windows
        self.window_buffer = torch.empty((block or count) * batch_size, WINDOW, device=series.device)

    def at(self, offsets: torch.Tensor):
        """Flat `offsets` [K * B] of K customers (customer c's start s is c * T + s) -> windows [K, B, WINDOW],
        targets and weights [K, B, HORIZON], observed target hours [K]."""
        shape = (len(offsets) // self.batch_size, self.batch_size)
        windows = torch.index_select(self.carried_rows, 0, offsets, out=self.window_buffer[: len(offsets)])
        # Only a window whose first hour is a gap can have hours with nothing to carry forward. Those that start
        # before the first reading take the precomputed rows; the others (an outage at their start) are filled
        # from the window itself (`fill_gaps`: the same hour of a later week); the rest are the carried rows.
        early = self.before_first.index_select(0, offsets).nonzero().squeeze(1)
        if len(early):
            starts = offsets.index_select(0, early)
            lead = self.lead_rows.index_select(0, starts)
            lead.masked_fill_(self.ahead_rows.index_select(0, starts) >= self.room, 0.0)
            windows.index_copy_(0, early, lead)
        gap_first = self.gap_after_first.index_select(0, offsets).nonzero().squeeze(1)
        if len(gap_first):
            starts = offsets.index_select(0, gap_first)
            windows.index_copy_(0, gap_first, fill_gaps(self.raw_rows.index_select(0, starts)))
        ahead = offsets + WINDOW
        return (
            windows.view(*shape, WINDOW),
            self.target_rows.index_select(0, ahead).view(*shape, HORIZON),
            self.weight_rows.index_select(0, ahead).view(*shape, HORIZON),
            self.observed_ahead.index_select(0, ahead).view(shape).sum(1),
        )


# ---- the closed-form fit -----------------------------------------------------------------------------------------

# Customers per block of the pass and of the solves: a block's temporaries (its windows' features, products and
# systems: about 1.5 MB per customer at 64 windows per chunk) are what the fit holds besides its sums.
BLOCK_CUSTOMERS = 32

# Ridge strengths tried per customer, relative to the mean diagonal of its Gram matrix (for each forecast hour),
# and half-lives (hours) of the weight of older training windows (0: all weigh the same); each customer picks on
# its validation week. Every constant here was chosen on the accuracy bench's development protocol only
# (`python -m bench accuracy --dev --variant ...`, bench/RESULTS.md: the variants tried, the rule, the choice).
RIDGE_STRENGTHS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HALF_LIVES = (0, 336)
TOP = 1  # with COMBINE "top" only: candidates averaged per customer (the first round chose 1)
DEVIATION_SPANS = (1, 2, 4, 8, 24, 72, 168)  # hours: the recent level against the same hours of earlier weeks
SELECTION = "mape+rmse"  # how candidates are ranked on the validation week (`Validation.scores`)
# Fixed candidates that carry the recent level's move forward (`fixed_candidates`): a fit on weeks of flat level
# learns not to, and the dev real series' held-out weeks follow a level drop (MSTL's level follows it).
LEVEL_CANDIDATES: tuple[int, ...] | None = None  # spans (hours, each one of DEVIATION_SPANS); None: every span
# Seasonal naive forecasts as fixed candidates, by lag (hours: 24 or 168): the evaluation step's own baselines,
# so a customer whose last week says more than the four-week average (e.g. earlier weeks' long outages, forward
# filled) can pick what the condition compares with.
BASELINE_CANDIDATES: tuple[int, ...] = ()
# Fixed candidates that are statsforecast's MSTL(24, 168) forecast with a simple-exponential-smoothing level of each
# alpha: with a fixed alpha MSTL is a linear map of the window (`mstl.forecast_map`), so the candidate is exactly
# it, served as W_lin. (): none.
MSTL_ALPHAS: tuple[float, ...] = (0.9,)
# The prior the fitted candidates correct (an index of `priors`): 0 the seasonal window average; k MSTL's with
# MSTL_ALPHAS[k - 1]'s level (their ridge then shrinks towards MSTL's forecast instead).
FITTED_PRIOR = 0
VALIDATION_STRIDE = HORIZON  # hours between the validation forecasts' origins (HORIZON: daily, as evaluated)
# Weeks of daily origins, ending with the validation week, that rank the fixed candidates among themselves (they
# are not fitted, so every origin before the held-out tail is fair; 1: the validation week alone). The fitted
# ones can only be scored on the validation week.
FIXED_SCORING_WEEKS = 4
# How a customer's members are chosen (`members`): "fixed+fitted": the mean of the best fixed and the best fitted
# candidate (a forecast combination: their errors differ, so the mean's spread is smaller; dev: it cut the
# worst ratio most of all single changes); "top": the mean of the TOP best by validation score (the first round's).
COMBINE = "fixed+fitted"


@functools.cache
def design() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The linear model's features for forecast hour h, each a fixed linear map of the window:
    - `picks` [HORIZON, P]: the window hour it reads: the same hour of the week in the first three weeks, and the
      same hour of the day on each of the last seven days (the weekly and daily shape);
    - `shared` [WINDOW, Q] (every h): the recent level's deviation from the weekly shape: x[t] minus the mean of
      x[t - 168 k], k = 1..3, for each of the last 24 hours t and averaged over the last DEVIATION_SPANS hours
      (what MSTL's level forecast reads off the deseasonalised series);
    - a constant.
    Returns (picks, shared, basis [HORIZON, WINDOW, P + Q + 1]: feature f of hour h as a column of W_lin; the
    constant's column is zero, it is b_lin)."""
    hours = torch.arange(HORIZON)
    picks = torch.cat([hours[:, None] + WEEK * torch.arange(3), hours[:, None] + 24 * torch.arange(21, 28)], 1)
    columns = []
    for span in DEVIATION_SPANS:
        columns.append(_deviation(WINDOW - 1 - torch.arange(span)))
    for hour in range(WINDOW - 24, WINDOW):
        columns.append(_deviation(torch.tensor([hour])))
    shared = torch.stack(columns, 1)
    count = picks.shape[1] + shared.shape[1] + 1
    basis = torch.zeros(HORIZON, WINDOW, count, dtype=torch.float64)
    for h in range(HORIZON):
        basis[h, picks[h], torch.arange(picks.shape[1])] = 1.0
        basis[h, :, picks.shape[1] : -1] = shared.double()
    return picks, shared, basis


def _deviation(recent: torch.Tensor) -> torch.Tensor:
    column = torch.zeros(WINDOW)
    column[recent] += 1.0 / len(recent)
    for week in (1, 2, 3):
        column[recent - WEEK * week] -= 1.0 / len(recent) / 3
    return column


def seasonal_window_average() -> torch.Tensor:
    """[WINDOW, HORIZON]: the mean of the same hour of the week over the window's four weeks (the prior the
    ridge fit shrinks towards, and a candidate of its own)."""
    prior = torch.zeros(WINDOW, HORIZON, dtype=torch.float64)
    hours = torch.arange(HORIZON)
    for week in range(WINDOW // WEEK):
        prior[hours + WEEK * week, hours] = 1.0 / (WINDOW // WEEK)
    return prior


def features(windows: torch.Tensor) -> torch.Tensor:
    """[C, N, WINDOW] -> [C, HORIZON, N, F]: every window's features for each forecast hour (`design`)."""
    picks, shared, _ = design()
    picked = windows[..., picks.to(windows.device)]  # [C, N, HORIZON, P]
    common = torch.cat([windows @ shared.to(windows.device), torch.ones_like(windows[..., :1])], -1)
    return torch.cat([picked, common[:, :, None, :].expand(-1, -1, HORIZON, -1)], -1).permute(0, 2, 1, 3)


def _deviations(windows: torch.Tensor) -> torch.Tensor:
    """windows @ design()'s `shared` [.., Q]: each column reads the last week's hours minus the mean of the same
    hours in the three weeks before, so it is computed from those deviations (a week of hours, not the window's
    four: a quarter of the product)."""
    last_week = _last_week_map(design()[1])
    if last_week is None:  # a design whose columns read otherwise (a variant): the full product
        return windows @ design()[1].to(windows)
    weeks = windows.view(*windows.shape[:-1], WINDOW // WEEK, WEEK)
    deviation = weeks[..., -1, :] - weeks[..., :-1, :].sum(-2) / (WINDOW // WEEK - 1)
    return deviation @ last_week.to(windows)


@functools.cache  # keyed by the tensor itself: a variant's design() (cache cleared) is another tensor
def _last_week_map(shared: torch.Tensor) -> torch.Tensor | None:
    """`shared`'s rows for the window's last week, if every earlier week's rows are minus a third of them."""
    recent = shared[-WEEK:]
    earlier = shared[:-WEEK].view(WINDOW // WEEK - 1, WEEK, -1)
    expected = (-recent / (WINDOW // WEEK - 1)).expand_as(earlier)
    return recent.contiguous() if torch.allclose(earlier, expected, rtol=0, atol=1e-7) else None


@functools.cache  # keyed by the alphas, so a variant's MSTL_ALPHAS needs no cache clearing
def _priors(alphas: tuple[float, ...]) -> torch.Tensor:
    maps = [seasonal_window_average()]
    maps += [torch.tensor(mstl.forecast_map(WINDOW, HORIZON, alpha)) for alpha in alphas]  # a copy: read-only
    return torch.stack(maps)


def priors() -> torch.Tensor:
    """[K, WINDOW, HORIZON] float64: the maps a model's weights start from (`linear_parameters`' `mix`): the
    seasonal window average, then MSTL's with each MSTL_ALPHAS level."""
    return _priors(tuple(MSTL_ALPHAS))


def _device_prior(index: int, device: torch.device) -> torch.Tensor:
    return _device_priors(tuple(MSTL_ALPHAS), device)[index]


@functools.cache
def _device_priors(alphas: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return _priors(alphas).to(device, torch.float32)


def level_spans() -> tuple[int, ...]:
    """The spans of the level candidates (LEVEL_CANDIDATES; None: every one of DEVIATION_SPANS)."""
    return DEVIATION_SPANS if LEVEL_CANDIDATES is None else LEVEL_CANDIDATES


def fixed_priors() -> list[int]:
    """The prior (an index of `priors`) of each of `fixed_candidates`, in order."""
    return [0] * (1 + len(level_spans()) + len(BASELINE_CANDIDATES)) + list(range(1, 1 + len(MSTL_ALPHAS)))


def one_prior(index: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[count, K] `mix` of a candidate built on prior `index` alone."""
    mix = torch.zeros(count, len(priors()), dtype=torch.float64, device=device)
    mix[:, index] = 1.0
    return mix


def fixed_candidates(count: int, size: int, device: torch.device) -> list[torch.Tensor]:
    """Feature weights [C, HORIZON, F] of the candidates that need no fit: the seasonal window average (all zero),
    then per level span (LEVEL_CANDIDATES) the seasonal window average plus the deviation of the last `span` hours'
    level from the same hours of the three weeks before (the level moved: carry the move forward, as an
    exponential-smoothing or MSTL level does; a span must be one of DEVIATION_SPANS); then the seasonal naive
    forecast of each BASELINE_CANDIDATES lag; then one per MSTL_ALPHAS,
    whose weights are all zero: its prior is MSTL's map (`fixed_priors`)."""
    prior = torch.zeros(count, HORIZON, size, dtype=torch.float64, device=device)
    chosen = [prior]
    picks = design()[0].shape[1]
    for span in level_spans():
        if span not in DEVIATION_SPANS:
            raise ValueError(f"LEVEL_CANDIDATES span {span} is not one of DEVIATION_SPANS {DEVIATION_SPANS}")
        level = prior.clone()
        level[..., picks + DEVIATION_SPANS.index(span)] = 1.0
        chosen.append(level)
    for lag in BASELINE_CANDIDATES:  # x[WINDOW - lag + h] minus the seasonal window average, in the picks
        if lag not in (24, 168):
            raise ValueError(f"BASELINE_CANDIDATES lag {lag} must be 24 or 168 (a seasonal naive baseline)")
        naive = prior.clone()
        naive[..., :4] = -1.0 / 4  # the same hour of the week in each of the four weeks (the last: pick 3)
        naive[..., 10 - lag // 24] += 1.0  # picks 3..9: the same hour on the last seven days
        chosen.append(naive)
    chosen += [prior] * len(MSTL_ALPHAS)  # shared, never written to
    return chosen


def members(scores: torch.Tensor, fixed_scores: torch.Tensor | None, fixed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each customer's model as a weighted mean of its candidates (COMBINE): (indices [C, M], weights [C, M]
    float64, summing to 1 per customer). `scores` [C, N]: every candidate's validation score (the `fixed` fixed
    ones first); `fixed_scores` [C, fixed]: the fixed ones' scores over FIXED_SCORING_WEEKS, which then pick the
    one fixed candidate that competes (None: the validation week picks). Ties go to the earlier candidate; per
    customer, so a customer's model never depends on the others."""
    ranking = scores.clone()
    if fixed_scores is not None:
        best = fixed_scores.argsort(dim=1, stable=True)[:, :1]
        others = torch.ones_like(fixed_scores, dtype=torch.bool).scatter_(1, best, False)
        ranking[:, :fixed] = torch.where(others, torch.inf, ranking[:, :fixed])
    if COMBINE == "top":
        chosen = ranking.argsort(dim=1, stable=True)[:, :TOP]
        return chosen, torch.full(chosen.shape, 1.0 / TOP, dtype=torch.float64, device=scores.device)
    if COMBINE != "fixed+fitted":
        raise ValueError(f"COMBINE must be 'fixed+fitted' or 'top', got {COMBINE!r}")
    best_fixed = ranking[:, :fixed].argsort(dim=1, stable=True)[:, :1]
    best_fitted = fixed + ranking[:, fixed:].argsort(dim=1, stable=True)[:, :1]
    chosen = torch.cat([best_fixed, best_fitted], 1)
    # The better of the two by validation score first (the artifact's `chosen_epochs`).
    chosen = chosen.gather(1, scores.gather(1, chosen).argsort(dim=1, stable=True))
    return chosen, torch.full(chosen.shape, 0.5, dtype=torch.float64, device=scores.device)


def linear_parameters(beta: torch.Tensor, hidden: int, mix: torch.Tensor | None = None) -> ForecasterParameters:
    """Feature weights [C, HORIZON, F] (float64) -> the served model's weights: W_lin = the prior + the features'
    columns, b_lin = the constant's weight; the ReLU correction's weights are zero (off). The prior is the
    seasonal window average, or with `mix` [C, K] (float64) each customer's weighted sum of the `priors`."""
    picks, shared, basis = design()
    count, beta = beta.shape[0], beta.cpu()
    prior = seasonal_window_average()
    maps = None if mix is None else priors()
    mix = None if mix is None else mix.cpu()
    last_week = _last_week_map(shared)
    p, weeks = picks.shape[1], WINDOW // WEEK
    hours = torch.arange(HORIZON)[:, None]
    w_in = torch.zeros(count, WINDOW, HORIZON + hidden)
    b_in = torch.zeros(count, 1, HORIZON + hidden)
    for first in range(0, count, BLOCK_CUSTOMERS):  # W_lin in float64 a block at a time, stored as float32
        rows = slice(first, first + BLOCK_CUSTOMERS)
        start = prior.repeat(len(beta[rows]), 1, 1) if mix is None else torch.einsum("ck,kwh->cwh", mix[rows], maps)
        if last_week is None:  # a design whose shared columns read otherwise (a variant): the dense product
            w_in[rows, :, :HORIZON] = start + torch.einsum("hwf,chf->cwh", basis, beta[rows])
            continue
        # `basis` by its parts: each hour's picked window hours, and the shared columns from their last week's
        # rows (the earlier weeks' are minus a third of them): a fifth of the dense product's arithmetic.
        w = start
        w[:, picks, hours] += beta[rows, :, :p]
        level = last_week.double() @ beta[rows, :, p:-1].transpose(1, 2)  # [B, WEEK, HORIZON]
        w.view(-1, weeks, WEEK, HORIZON)[:, -1] += level
        w.view(-1, weeks, WEEK, HORIZON)[:, :-1] -= (level / (weeks - 1))[:, None]
        w_in[rows, :, :HORIZON] = w
    b_in[:, 0, :HORIZON] = beta[..., -1]
    return ForecasterParameters(w_in, b_in, torch.zeros(count, hidden, HORIZON))


class NormalEquations:
    """Per customer, forecast hour and half-life: X' V X and X' V r over training windows, where r is the target
    minus the seasonal window average's forecast and V weighs each target hour by (std / |reading|)^2, the
    squared error relative to the reading (readings below 5 % of the mean count as 5 % of it; gaps weigh 0),
    times 0.5^(age / half-life). The sums first hold the windows before the validation week; `add_late` then
    folds in, a customer block at a time, the sums of the windows that reach into it (summed apart, as one
    block's own NormalEquations), with the older windows' weights decayed by the validation week's length: the
    candidates are solved before, the refit after. Each customer's sums read only its own windows, in the same
    order whatever the other customers are (chunks are fixed ranges of start hours; a window outside a
    customer's range weighs exactly 0), so sharding changes nothing.

    Memory: the sums are float64 (their float32 products per chunk and block are added in), per half-life and
    customer X'VX by its blocks (`add`): the shared columns' S x S block as its upper triangle (it is symmetric),
    the picked rows against the shared columns (P x S) and the P x P block, about half of a full F x F; `grams`
    assembles the full matrices a block of customers at a time, for the solves. The rest is per customer block
    (`BLOCK_CUSTOMERS`)."""

    def __init__(self, count: int, device: torch.device) -> None:
        p, s = design()[0].shape[1], design()[1].shape[1] + 1
        shape = (len(HALF_LIVES), count, HORIZON)
        self.shared = torch.zeros(*shape, s * (s + 1) // 2, dtype=torch.float64, device=device)
        self.cross = torch.zeros(*shape, p, s, dtype=torch.float64, device=device)
        self.own = torch.zeros(*shape, p, p, dtype=torch.float64, device=device)
        self.moment = torch.zeros(*shape, p + s, dtype=torch.float64, device=device)
        self.later_by: int | None = None  # hours the late windows were folded in with (None: not yet)

    def parts(self) -> tuple[torch.Tensor, ...]:
        """The sums as stored, each [len(HALF_LIVES), C, HORIZON, ...]."""
        return self.shared, self.cross, self.own, self.moment

    def grams(self, life: int | torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        """X'VX [B, HORIZON, F, F] of the customers `rows` at half-life index `life` (one, or one per customer)."""
        shared, cross, own = self.shared[life, rows], self.cross[life, rows], self.own[life, rows]
        p, s = cross.shape[-2:]
        upper = _upper(s, shared.device)
        gram = shared.new_empty(*shared.shape[:-1], p + s, p + s)
        block = gram[..., p:, p:]
        block[..., upper[0], upper[1]] = shared
        block[..., upper[1], upper[0]] = shared
        gram[..., :p, p:] = cross
        gram[..., p:, :p] = cross.transpose(-1, -2)
        gram[..., :p, :p] = own
        return gram

    @property
    def gram(self) -> torch.Tensor:
        """Every customer's full X'VX [len(HALF_LIVES), C, HORIZON, F, F] (for checks: twice the sums' memory)."""
        return torch.stack([self.grams(life, slice(None)) for life in range(len(HALF_LIVES))])

    def add(self, windows, target, weight, age, rows: slice = slice(None)) -> None:
        """Windows [K, N, WINDOW] of the K customers `rows`, their targets, weights [K, N, HORIZON], ages [K, N].

        For forecast hour h the features (`features`) are its P picked window hours and S columns shared by
        every hour (the level's deviations and the constant), so X'VX is built by blocks: the shared block from
        each window's S x S outer product (one product for every hour), the picked rows against the shared
        columns (one product), the P x P block per hour, all from slices of the windows; the [K, HORIZON, N, F]
        features are never built (a third less CPU per chunk than HORIZON full F x F products)."""
        picks, shared, _ = design()
        p, s = picks.shape[1], shared.shape[1] + 1
        count, n = windows.shape[:2]
        common = torch.cat([_deviations(windows), torch.ones_like(windows[..., :1])], -1)  # [K, N, S]
        # [K, N, S(S+1)/2]: the symmetric block's upper half, row by row (`_upper`'s order; a gather is 6x slower)
        outer = torch.cat([common[..., i : i + 1] * common[..., i:] for i in range(s)], -1)
        # Hour h's picks are h + the same offsets for every h: slices, not a gather (contiguous: faster products).
        # The residual rides along as a (P+1)-th picked row: the products with the picked and the shared columns
        # then give the moments too (row P), with no matrix-vector products of their own.
        offsets = (picks[0] - picks[0, 0]).tolist()
        weeks = windows.view(count, n, WINDOW // WEEK, WEEK)[..., :HORIZON]  # the seasonal window average's hours
        if FITTED_PRIOR:  # a dense prior: one product per chunk
            residual = target - windows @ _device_prior(FITTED_PRIOR, windows.device).to(windows.dtype)
        else:
            residual = target - weeks.sum(2) / (WINDOW // WEEK)  # [K, N, HORIZON]
        slices = [windows[..., o : o + HORIZON].transpose(1, 2) for o in offsets] + [residual.transpose(1, 2)]
        augmented = torch.stack(slices, 2)  # [K, HORIZON, P + 1, N], contiguous
        picked = augmented[:, :, :p]
        squared = weight.square().transpose(1, 2)  # [K, HORIZON, N]
        # Every half-life in one product each, the lives next to the hours (the per-customer products' rows)
        lives = len(HALF_LIVES)
        v = torch.stack([squared * _decay(age, life)[:, None, :] if life else squared for life in HALF_LIVES], 2)
        weighted = augmented[:, :, None] * v[..., None, :]  # [K, HORIZON, L, P + 1, N]
        shared_sums = (v.view(count, HORIZON * lives, n) @ outer).view(count, HORIZON, lives, -1)
        crossed = (weighted.view(count, HORIZON * lives * (p + 1), n) @ common).view(count, HORIZON, lives, p + 1, s)
        owned = weighted.view(count, HORIZON, lives * (p + 1), n) @ picked.transpose(-1, -2)
        owned = owned.view(count, HORIZON, lives, p + 1, p)
        for index in range(lives):  # float32 products, float64 sums
            self.shared[index, rows].add_(shared_sums[:, :, index])
            self.cross[index, rows].add_(crossed[:, :, index, :p])
            self.own[index, rows].add_(owned[:, :, index, :p])
            moment = self.moment[index, rows]
            moment[..., :p].add_(owned[:, :, index, p])
            moment[..., p:].add_(crossed[:, :, index, p])

    def add_late(self, late: NormalEquations, rows: slice | torch.Tensor, later_by: int) -> None:
        """Fold the late windows' sums of the customers `rows` in: older windows' weights decay by `later_by`
        hours more (their ages counted from the end of the validation week)."""
        if self.later_by not in (None, later_by):
            raise ValueError(f"late windows were folded in {self.later_by} hours later, not {later_by}")
        lives = torch.tensor(HALF_LIVES, dtype=torch.float64, device=self.moment.device)
        factor = torch.where(lives > 0, 0.5 ** (later_by / lives.clamp_min(1)), 1.0)
        for mine, theirs in zip(self.parts(), late.parts(), strict=True):
            for index in range(len(HALF_LIVES)):
                mine[index, rows] = mine[index, rows] * factor[index] + theirs[index]
        self.later_by = later_by

    def candidates(self, strengths: tuple[float, ...]) -> list[torch.Tensor]:
        """The ridge solutions [C, HORIZON, F] of every (half-life, strength) in HALF_LIVES x `strengths`, in that
        order, from the sums before `add_late`: the systems `solve` builds, solved as it solves them (the same
        bits), each block's sums assembled once and every system factored in one reused buffer (`_ridge_solve`)
        where `solve` gathers the sums per call (it takes a half-life and a strength per customer). A block of
        customers at a time (a customer's solutions do not depend on it)."""
        if self.later_by is not None:
            raise ValueError("the candidates are solved from the sums without the validation windows, before add_late")
        count = self.moment.shape[1]
        lives = len(HALF_LIVES)
        solutions = torch.empty(lives, len(strengths), *self.moment.shape[1:], dtype=torch.float64,
                                device=self.moment.device)  # fmt: skip
        factor = None
        for first in range(0, count, BLOCK_CUSTOMERS):
            rows = slice(first, min(first + BLOCK_CUSTOMERS, count))
            for life in range(lives):
                gram, moment = self.grams(life, rows), self.moment[life, rows]
                scale = _ridge_scale(gram)
                if factor is None or factor.shape != gram.shape:
                    factor = torch.empty_like(gram).mT  # LAPACK's column-major layout: factored in place
                for index, strength in enumerate(strengths):
                    solutions[life, index, rows] = _ridge_solve(gram, strength * scale, moment, factor)
        return [solutions[life, index] for life in range(lives) for index in range(len(strengths))]

    def solve(self, strength: torch.Tensor, half_life: torch.Tensor, late: bool, later_by: int,
              customers: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Ridge solutions [C, HORIZON, F] for per-customer strengths [C] and half-life indices [C]; `late`:
        with the validation windows (`add_late` must have folded them in, `later_by` hours later), else
        without them (before `add_late`). `customers` [C]: the rows of the sums to solve (default: all, in
        order). Solved a block of customers at a time (a customer's solution does not depend on its block)."""
        if late != (self.later_by is not None) or (late and later_by != self.later_by):
            held = "without" if self.later_by is None else f"with (folded in {self.later_by} hours later)"
            raise ValueError(f"the sums are {held} the validation windows; solve them before add_late for the "
                             "candidates, after it for the refit")  # fmt: skip
        count = len(strength)
        if customers is None:
            customers = torch.arange(count, device=self.moment.device)
        solutions = torch.empty(count, *self.moment.shape[2:], dtype=torch.float64, device=self.moment.device)
        for first in range(0, count, BLOCK_CUSTOMERS):
            rows = torch.arange(first, min(first + BLOCK_CUSTOMERS, count), device=strength.device)
            sums = customers[rows]
            gram, moment = self.grams(half_life[rows], sums), self.moment[half_life[rows], sums]
            solutions[rows] = _ridge_solve(gram, strength[rows, None, None] * _ridge_scale(gram), moment)
        return solutions


def _ridge_scale(gram: torch.Tensor) -> torch.Tensor:
    """[.., 1]: what a ridge strength is relative to, the mean of gram's diagonal, for the candidates and the
    refit alike (one formula: a refit solves exactly the system its candidate was chosen with)."""
    return gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[..., None]


def _ridge_solve(gram: torch.Tensor, ridge: torch.Tensor, moment: torch.Tensor,
                 factor: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """gram [.., F, F] (symmetric) plus `ridge` [.., 1] (> 0) on its diagonal, solved for moment [.., F] by
    Cholesky: a third less CPU than LU (torch.linalg.solve) on the fit's 42 x 42 systems. The system is built
    and factored in `factor` (a column-major [.., F, F] buffer, reused across calls; default: a new one), so
    LAPACK copies nothing (copies into its layout were half the LU solve's CPU). A system whose factorisation
    fails (not positive definite in floating point) is solved by LU instead."""
    if factor is None:
        factor = torch.empty_like(gram).mT
    # gram is symmetric: its transpose is the same matrix, and copies into the column-major buffer contiguously.
    factor.copy_(gram.mT).diagonal(dim1=-2, dim2=-1).add_(ridge)
    info = torch.empty(gram.shape[:-2], dtype=torch.int32, device=gram.device)
    torch.linalg.cholesky_ex(factor, out=(factor, info))
    lower = torch.linalg.solve_triangular(factor, moment[..., None], upper=False)
    solution = torch.linalg.solve_triangular(factor.mT, lower, upper=True).squeeze(-1)
    failed = info != 0
    if bool(failed.any()):
        system = gram[failed].clone()
        system.diagonal(dim1=-2, dim2=-1).add_(ridge[failed])
        solution[failed] = torch.linalg.solve(system, moment[failed])
    return solution


@functools.cache
def _upper(size: int, device: torch.device) -> torch.Tensor:
    """[2, size(size+1)/2]: the row and column of each upper-triangle entry of a size x size matrix."""
    return torch.triu_indices(size, size, device=device)


def _decay(age: torch.Tensor, half_life: int) -> torch.Tensor:
    """0.5 ** (age / half_life), the same for a window whatever block it is summed in: a vectorised pow can round
    a tensor's last elements (past its whole vectors) otherwise than the rest, and which elements those are
    depends on the block. Whole-hour ages (all that `sum_windows` gives) read a table of libm's values instead."""
    whole = age.round()
    if not torch.equal(age, whole) or bool((age < 0).any()):
        return 0.5 ** (age / half_life)
    table = _decay_table(half_life, -(-(int(age.max()) + 1) // 4096) * 4096)  # sizes in steps: few tables
    return table.to(age)[whole.long()]


@functools.cache
def _decay_table(half_life: int, size: int) -> torch.Tensor:
    return torch.tensor([0.5 ** (hours / half_life) for hours in range(size)], dtype=torch.float64)


def sum_windows(sampler: WindowSampler, equations: NormalEquations, rows: slice | torch.Tensor, begin: torch.Tensor,
                end: torch.Tensor, chunks: range) -> None:  # fmt: skip
    """Add to `equations` (one row per customer of `rows`: a block's own sums) the windows of the customers
    `rows` that start in [begin, end) ([C] each, hours), each aged from end - 1, in chunks of the fixed start ranges
    `chunks` (k: hours k * B .. k * B + B - 1, the same for every customer). A chunk none of the block's windows
    lies in is skipped: it would add 0."""
    batch = sampler.batch_size
    device = begin.device
    lows, highs = begin[rows].tolist(), end[rows].tolist()  # once per block: the skips are decided on the host
    offsets = torch.arange(batch, device=device)[None, :]
    block_begin, block_end, block_rows = begin[rows, None], end[rows, None], sampler.row_of_customer[rows]
    for chunk in chunks:
        first = chunk * batch
        if not any(low <= first + batch - 1 and first < high for low, high in zip(lows, highs, strict=True)):
            continue
        start = first + offsets  # [1, B]: the same for everyone
        windows, target, weight, _ = sampler.at((block_rows + torch.minimum(start, block_end - 1)).reshape(-1))
        inside = (start >= block_begin) & (start < block_end)
        age = (block_end - 1 - start).clamp_min(0).to(windows.dtype)
        equations.add(windows, target, weight * inside[..., None], age)


def length_blocks(starts: torch.Tensor) -> list[torch.Tensor]:
    """Customer rows in blocks of BLOCK_CUSTOMERS, ordered by `starts` (where each history's windows end; equal
    ones keep the id order), so that a block's customers read the same chunks of start hours."""
    order = torch.argsort(starts.cpu(), stable=True).to(starts.device)
    return [order[first : first + BLOCK_CUSTOMERS] for first in range(0, len(starts), BLOCK_CUSTOMERS)]


def add_validation_windows(sampler: WindowSampler, equations: NormalEquations, early_starts: torch.Tensor,
                           late_starts: torch.Tensor, later_by: int) -> None:  # fmt: skip
    """The refit's sums: the windows that reach into the validation week, summed a customer block at a time
    apart (aged from the week's end) and folded into `equations` (`add_late`), so that the pass never holds two
    sets of [C, HORIZON, F, F] sums. The candidates must have been solved before this. Blocks group customers by
    where their validation week lies (histories differ in length), so a block reads a few chunks, not each of
    its customers' own; a customer's sums do not depend on its block."""
    batch = sampler.batch_size
    for rows in length_blocks(early_starts):
        late = NormalEquations(len(rows), equations.moment.device)
        chunks = range(int(early_starts[rows].min()) // batch, -(-int(late_starts[rows].max()) // batch))
        sum_windows(sampler, late, rows, early_starts, late_starts, chunks)
        equations.add_late(late, rows, later_by)


def train(
    data: SeriesSet,
    hp: Hyperparameters,
    device: torch.device | str = "cpu",
    checkpointer: Checkpointer | None = None,
    progress: bool = True,
) -> TrainedModels:
    """Fit one linear model per eligible customer of `data`, all at once on `device` (see the module docstring)."""
    started = time.perf_counter()
    device = torch.device(device)
    keep, skipped = eligible(data, hp)
    if not keep:
        empty = ForecasterParameters.initial(customer_keys([], hp.seed), hp.hidden, torch.device("cpu"))
        return TrainedModels((), empty, torch.zeros(0), torch.zeros(0), hp, skipped)
    if device.type == "cpu":
        keep_freed_memory()
    data = padded(data.subset(keep))
    run_id = fingerprint(data, hp)
    state = checkpointer.load(run_id) if checkpointer else None
    if state is not None:
        print(f"train: this shard's fit is in {checkpointer.path}; not fitting again", flush=True)
        return _from_state(state, data.customers, hp, skipped, started)
    mean_np, std_np = normalisation(data, hp)
    train_lengths = torch.as_tensor(data.lengths - hp.holdout_hours - hp.validation_hours, device=device)
    readings = torch.as_tensor(data.values, device=device)
    mean, std = torch.as_tensor(mean_np, device=device), torch.as_tensor(std_np, device=device)
    count = len(data.customers)
    sampler = WindowSampler(readings, mean, std, hp.batch_size, BLOCK_CUSTOMERS)
    equations = NormalEquations(count, device)
    early_starts = train_lengths - SPAN + 1  # windows whose forecast ends before the validation week
    late_starts = early_starts + hp.validation_hours  # ... and those that reach into it (the refit's)
    # Blocks of customers of similar lengths, as add_validation_windows groups them: a block reads every chunk up
    # to its longest customer's last window, so a short history in a block of long ones would ride along for
    # nothing. A block sums into its own NormalEquations, put in place after (a customer's sums do not depend on
    # its block; equal lengths keep the id order).
    blocks = length_blocks(early_starts)
    zero = torch.zeros_like(early_starts)
    for rows in tqdm(blocks, desc=f"train: {count} customers on {device}", unit="block", disable=not progress,
                     mininterval=2):  # fmt: skip
        chunks = range(-(-int(early_starts[rows].max()) // hp.batch_size))  # from start hour 0
        block = NormalEquations(len(rows), device)
        sum_windows(sampler, block, rows, zero, early_starts, chunks)
        for mine, theirs in zip(equations.parts(), block.parts(), strict=True):
            mine[:, rows] = theirs
        del block

    # Candidates, each scored on the validation week: the fixed ones first (0 is the seasonal window average, the
    # prior; then the level, baseline and MSTL candidates), then every (half-life, strength) fitted on the windows
    # before it.
    validation = Validation(readings, mean, std, train_lengths, hp.validation_hours)
    size = equations.moment.shape[-1]
    fixed = fixed_candidates(count, size, device)
    grid = [(h, s) for h in range(len(HALF_LIVES)) for s in RIDGE_STRENGTHS]
    prior_of = fixed_priors() + [FITTED_PRIOR] * len(grid)  # each candidate's prior (an index of `priors`)
    candidates = list(fixed)  # [C, H, F] each
    candidates += equations.candidates(RIDGE_STRENGTHS)  # in `grid`'s order
    # One candidate's served weights at a time ([C, WINDOW, HORIZON] each: all of them at once would be the
    # fit's largest allocation); a fixed one's serve both its scorings.
    longer = None
    if FIXED_SCORING_WEEKS > 1:  # the fixed candidates are not fitted: any origin before the held-out tail is fair
        hours = FIXED_SCORING_WEEKS * WEEK
        longer = Validation(readings, mean, std, train_lengths + hp.validation_hours - hours, hours)
    errors, longer_errors = [], []
    for index, beta in enumerate(candidates):
        # Scored without the ReLU correction's columns: they are zeros (off), so the errors are the served model's,
        # bit for bit, at a third of the CPU (no [C, WINDOW, hidden] zeros built and multiplied).
        params = linear_parameters(beta, 0, one_prior(prior_of[index], count)).to(device)
        errors.append(validation.errors(params))
        if longer is not None and index < len(fixed):
            longer_errors.append(longer.errors(params))
        del params
    scores, _ = validation.rank(errors)
    fixed_scores = None if longer is None else longer.rank(longer_errors)[0]
    del longer, errors, longer_errors
    add_validation_windows(sampler, equations, early_starts, late_starts, hp.validation_hours)
    # Each customer's model is a weighted mean of its members (`members`: a linear map still), the fitted ones
    # fitted again with the validation week's windows too (the most recent data; the held-out tail is never
    # seen). Fixed candidates stay as they are.
    ranked, weights = members(scores, fixed_scores, len(fixed))  # [C, M] each
    ranked, weights = ranked.to(device), weights.to(device)
    beta = torch.zeros(count, HORIZON, size, dtype=torch.float64, device=device)
    # Each customer's prior: its members' priors, weighted as they are.
    prior_index = torch.tensor(prior_of, dtype=torch.int64, device=device)
    mix = torch.zeros(count, len(priors()), dtype=torch.float64, device=device)
    for column, weight in zip(ranked.T, weights.T, strict=True):
        mix.scatter_add_(1, prior_index[column][:, None], weight[:, None])
        refit = _gather(fixed, column)  # the fixed members as they are; the fitted ones solved again (only they)
        solved = (column >= len(fixed)).nonzero().squeeze(1)
        fitted = [grid[c - len(fixed)] for c in column[solved].tolist()]
        life = torch.tensor([g[0] for g in fitted], dtype=torch.int64, device=device)
        strength = torch.tensor([g[1] for g in fitted], dtype=torch.float64, device=device)
        refit[solved] = equations.solve(strength, life, True, hp.validation_hours, solved)
        beta += refit * weight[:, None, None]
    del equations, sampler  # solved: what follows reuses their memory
    # The same mean of the candidates as fitted before the refit: P10/P90 are estimated with it (out of sample).
    chosen_fits = torch.stack([_gather(candidates, column) for column in ranked.T])  # [M, C, H, F]
    before_validation = (chosen_fits * weights.T[..., None, None]).sum(0)
    # The validation MAPE of that model (what the artifact's history reports), and its leading member.
    mapes, _ = validation.errors(linear_parameters(before_validation, 0, mix).to(device))
    mapes = torch.where(validation.has_points, mapes, 0.0)
    ranked = ranked.cpu()
    chosen = ranked[:, 0]
    params = linear_parameters(beta, hp.hidden, mix)
    if device.type == "cuda":
        torch.cuda.synchronize()
    models = TrainedModels(
        customers=data.customers,
        params=params,
        mean=mean.cpu(),
        std=std.cpu(),
        hyperparameters=hp,
        skipped=skipped,
        history=[float(mapes.mean())],
        chosen_epochs=chosen,
        device=str(device),
        seconds=time.perf_counter() - started,
        validation_params=linear_parameters(before_validation, hp.hidden, mix),
    )
    if checkpointer:
        checkpointer.maybe_save(_state(models, run_id), force=True)
    return models


def _gather(candidates: list[torch.Tensor], column: torch.Tensor) -> torch.Tensor:
    """[C, HORIZON, F]: customer c's row of candidates[column[c]] (a column past the list: zeros), without
    stacking the list (20 candidates' copies to take one row each)."""
    chosen = torch.zeros_like(candidates[0])
    for index, candidate in enumerate(candidates):
        rows = (column == index).nonzero().squeeze(1)
        chosen[rows] = candidate[rows]
    return chosen


def padded(data: SeriesSet) -> SeriesSet:
    """`data` with PADDING gap hours before each customer's first reading, so that a window may reach back past
    it (the hours there are gaps, filled as any leading gap is): a customer needs MIN_CONTEXT hours, not WINDOW.
    Training and evaluation both pad; serving clients send NaN for the hours they do not have."""
    count = len(data)
    values = np.concatenate([np.full((count, PADDING), np.nan, dtype=data.values.dtype), data.values], axis=1)
    return SeriesSet(data.customers, values, data.lengths + PADDING, data.starts - PADDING * HOUR_US)


def _rows(matrix: torch.Tensor, width: int) -> torch.Tensor:
    """[C, T] -> [C * T - width + 1, width] view: row o holds elements o .. o + width - 1 of the flat series."""
    flat = matrix.contiguous().reshape(-1)
    return flat.as_strided((flat.numel() - width + 1, width), (1, 1))


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory instead of returning it to the system. A CPU training step
    allocates tens of MB of temporaries (1,000 customers: 43 MB of windows alone); by default glibc gives large
    blocks back at once and the next step faults them in again, page by page (about a fifth of a step's time
    here). Process-wide, once; a no-op where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def _state(models: TrainedModels, run_id: str) -> dict:
    return {
        "fingerprint": run_id,
        "params": [t.detach().cpu() for t in models.params.tensors()],
        "mean": models.mean,
        "std": models.std,
        "history": list(models.history),
        "chosen": models.chosen_epochs,
        "validation_params": [t.detach().cpu() for t in models.validation_params.tensors()],
    }


def _from_state(state: dict, customers, hp, skipped, started) -> TrainedModels:
    params = ForecasterParameters(*state["params"])
    seconds = time.perf_counter() - started
    history, chosen = list(state["history"]), state["chosen"]
    honest = ForecasterParameters(*state["validation_params"]) if "validation_params" in state else None
    return TrainedModels(customers, params, state["mean"], state["std"], hp, skipped, history, chosen, "cpu", seconds,
                         validation_params=honest)  # fmt: skip
