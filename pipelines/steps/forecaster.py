"""One forecasting model per customer, all trained at once on one device.

Model (per customer, on readings normalised with the customer's mean and standard deviation):
    forecast = window @ W_lin + b_lin + relu(window @ W_hid + b_hid) @ W_out
a linear autoregression plus a small non-linear correction. The window is four weeks (WINDOW). For forecast hour
h, W_lin weighs only the same hour on each of the window's 28 days and the window's last 24 hours (`lag_mask`).
W_lin starts as the seasonal window average (the mean of the same hour of the week over the four weeks, the
strongest cheap peer evaluation compares against); W_out starts at zero. The correction sees the window's last
`correction_hours` only, by default none: over four weeks of input it overfits (held-out MAPE 11.2 % with it on
all 672 hours, 10.7 % without, 100 generated customers). The loss is the absolute error
relative to the reading (MAPE, what evaluation and the pipeline's condition judge; readings below 5 % of the
customer's mean count as 5 % of it, so that near-zero hours do not dominate); hours without a reading are left
out of it.

Early stopping per customer (`Validation`): the week before the held-out tail is never a training target; after
every epoch each customer's model is scored on it and keeps its best epoch's weights (epoch 0, the untrained
seasonal window average, included), so training can only choose to improve on the strongest cheap peer.

Short histories: windows may reach before a customer's first reading (`padded`: those hours are gaps, filled as
any leading gap), so a customer needs MIN_CONTEXT (one week) of real hours per window, not all of WINDOW.

Batching: the customers' weights are stacked into tensors with a leading customer dimension and every step is
one batched matrix product (torch.baddbmm/bmm) over all customers: no Python loop over customers, per step or
per epoch. The loss is the sum of the customers' own losses, and Adam is element-wise, so each customer's model
gets exactly the updates it would get if trained alone. Sampling and initialisation are derived from a hash of
(seed, customer id, epoch, step), so a customer's model does not depend on which other customers (or which host,
when training is sharded over instances) it was trained with: tests/integration/test_training.py checks this.

Gaps: a window's missing hours take the last reading before them (forward fill); hours before its first reading
take the same hour of the week from the first week that has one (`fill_gaps`), or the mean when none does.
The Triton preprocess model does exactly the same in numpy.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from modelgate.model_repository import HORIZON, WINDOW
from pipelines.steps.series import HOUR_US, SeriesSet

SPAN = WINDOW + HORIZON
WEEK = 7 * 24
MIN_CONTEXT = 7 * 24  # real hours a training window must hold; the rest of WINDOW may be before the first reading
PADDING = WINDOW - MIN_CONTEXT
_M31 = 2**31
_LOW31 = _M31 - 1


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 10  # early stopping per customer keeps the best; 20 measured no better (README)
    learning_rate: float = 1e-3
    batch_size: int = 64  # windows per customer per step
    steps_per_epoch: int = 32  # fixed, not derived from the data: a customer's training never depends on others'
    hidden: int = 16
    correction_hours: int = 0  # window hours the non-linear correction sees (`train`)
    seed: int = 1
    holdout_hours: int = 7 * 24  # the tail of each series kept for evaluation
    validation_hours: int = 7 * 24  # the week before it: picks each customer's epoch (0 = untrained), never a target
    min_coverage: float = 0.5  # share of training hours that must hold a reading

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 1 <= self.batch_size <= 4096:
            problems.append(f"batch_size must be in 1..4096, got {self.batch_size}")
        if not 1 <= self.steps_per_epoch <= 100_000:
            problems.append(f"steps_per_epoch must be in 1..100000, got {self.steps_per_epoch}")
        if not 1 <= self.hidden <= 512:
            problems.append(f"hidden must be in 1..512, got {self.hidden}")
        if not 0 <= self.correction_hours <= WINDOW:
            problems.append(f"correction_hours must be in 0..{WINDOW}, got {self.correction_hours}")
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


def lag_mask() -> torch.Tensor:
    """[WINDOW, HORIZON]: which window hours the linear part may weigh for each forecast hour h: the same hour
    on each of the window's days, and the last day's hours (the current level)."""
    mask = torch.zeros(WINDOW, HORIZON)
    hours = torch.arange(HORIZON)
    for day in range(WINDOW // 24):
        mask[hours + 24 * day, hours] = 1.0
    mask[WINDOW - 24 :, :] = 1.0
    return mask


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
    history: list[float] = field(default_factory=list)  # mean per-customer training loss per epoch
    chosen_epochs: torch.Tensor | None = None  # [C] the epoch whose weights each customer keeps (Validation)
    device: str = "cpu"
    seconds: float = 0.0
    # P10/P90 offsets (pipelines.steps.quantiles.Intervals), estimated after training from the point model's
    # validation errors (quantiles.attach); None until then. Kept apart from the point model on purpose.
    intervals: object | None = None

    def select(self, indices: list[int]) -> TrainedModels:
        """The models of the customers at `indices` (in that order)."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        chosen = None if self.chosen_epochs is None else self.chosen_epochs[index]
        return TrainedModels(tuple(self.customers[i] for i in indices), self.params.select(index), self.mean[index],
                             self.std[index], self.hyperparameters, dict(self.skipped), list(self.history), chosen,
                             self.device, self.seconds,
                             None if self.intervals is None else self.intervals.select(index))  # fmt: skip


def eligible(data: SeriesSet, hp: Hyperparameters) -> tuple[list[int], dict[str, str]]:
    """Customers with enough data to train and evaluate, and why the others are skipped."""
    keep, skipped = [], {}
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
    """Identifies a training run, for resuming from a checkpoint: same customers, data and settings (epochs
    may grow: a resumed run can train longer)."""
    digest = zlib.crc32(np.ascontiguousarray(data.values).tobytes())
    digest = zlib.crc32("|".join(data.customers).encode(), digest)
    settings = {k: v for k, v in asdict(hp).items() if k != "epochs"}
    return f"{digest:08x}-{zlib.crc32(repr(sorted(settings.items())).encode()):08x}"


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
    """Early stopping per customer: before the first epoch and after each one, every customer's MAPE over the
    validation hours (daily origins from `ends`, each forecast from the WINDOW hours before it, gaps filled as in
    serving); each customer keeps the weights of its best epoch (epoch 0: the untrained model, the seasonal window
    average). Selection is element-wise on the stacked weights, so a customer's result never depends on the
    others. A customer without a non-zero validation reading keeps its last epoch."""

    def __init__(self, readings: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, ends: torch.Tensor,
                 hours: int) -> None:  # fmt: skip
        device = readings.device
        origins = ends[:, None] + HORIZON * torch.arange(hours // HORIZON, device=device)  # [C, K]
        rows = torch.arange(len(readings), device=device)[:, None, None]
        self.scale, self.shift = std[:, None, None], mean[:, None, None]
        raw = readings[rows, origins[..., None] - WINDOW + torch.arange(WINDOW, device=device)]
        self.windows = fill_gaps((raw - self.shift) / self.scale)  # [C, K, WINDOW]
        actual = readings[rows, origins[..., None] + torch.arange(HORIZON, device=device)]
        scored = ~torch.isnan(actual) & (actual != 0)
        self.actual = torch.where(scored, actual, 1.0)
        self.weight = scored.float() / scored.sum((1, 2), keepdim=True).clamp_min(1)
        self.has_points = scored.any(2).any(1)
        self.best: ForecasterParameters | None = None
        self.error = torch.full((len(readings),), torch.inf, device=device)
        self.epoch = torch.zeros(len(readings), dtype=torch.int64, device=device)

    def mape(self, params: ForecasterParameters) -> torch.Tensor:
        with torch.no_grad():
            forecast = forward(params, self.windows) * self.scale + self.shift
        return ((forecast - self.actual).abs() / self.actual.abs() * self.weight).sum((1, 2))

    def consider(self, params: ForecasterParameters, epoch: int) -> None:
        error = torch.where(self.has_points, self.mape(params), 0.0)
        better = error <= self.error  # ties, and customers without validation points: the later epoch
        current = ForecasterParameters(*(t.detach().clone() for t in params.tensors()))
        if self.best is None:
            self.best = current
        else:
            for kept, new in zip(self.best.tensors(), current.tensors(), strict=True):
                kept[better] = new[better]
        self.error = torch.where(better, error, self.error)
        self.epoch = torch.where(better, epoch, self.epoch)

    def state(self) -> dict:
        return {"best": [t.cpu() for t in self.best.tensors()], "error": self.error.cpu(), "epoch": self.epoch.cpu()}

    def restore(self, state: dict) -> None:
        device = self.error.device
        self.best = ForecasterParameters(*(t.to(device) for t in state["best"]))
        self.error, self.epoch = state["error"].to(device), state["epoch"].to(device)


class WindowSampler:
    """Training batches of C customers' readings [C, T] (NaN = gap), normalised with their mean and std [C]: per
    step, B windows per customer with their targets, the loss weight of each target hour and the number of
    observed target hours.

    Everything that does not change between steps is computed once here: the gap-filled series, the targets with
    gaps as 0, and the loss weight of every hour (0 for a gap), so a step is a few row copies. Windows are rows of
    strided views over the flat [C * T] series (row o holds hours o .. o + width - 1): a step builds only [C, B]
    flat offsets and copies each window as one contiguous row (index_select); a customer's windows never reach
    the next customer's hours, because starts stay below length - SPAN.
    """

    def __init__(self, readings: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, batch_size: int) -> None:
        count, hours = readings.shape
        self.shape = (count, batch_size)
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
        self.lead_rows, self.ahead_rows = _rows(torch.nan_to_num(lead_filled), WINDOW), _rows(ahead, WINDOW)
        self.room = WINDOW - torch.arange(WINDOW, device=series.device)  # window hours left from each position
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
        self.window_buffer = torch.empty(count * batch_size, WINDOW, device=series.device)  # reused every step

    def batch(self, u: torch.Tensor, starts_available: torch.Tensor):
        """u: [C, B] uniforms -> windows [C, B, WINDOW], targets and weights [C, B, HORIZON], observed [C]."""
        offsets = (self.row_of_customer + (u * starts_available[:, None]).long()).reshape(-1)
        windows = torch.index_select(self.carried_rows, 0, offsets, out=self.window_buffer)
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
            windows.view(*self.shape, WINDOW),
            self.target_rows.index_select(0, ahead).view(*self.shape, HORIZON),
            self.weight_rows.index_select(0, ahead).view(*self.shape, HORIZON),
            self.observed_ahead.index_select(0, ahead).view(self.shape).sum(1),
        )


def train(
    data: SeriesSet,
    hp: Hyperparameters,
    device: torch.device | str = "cpu",
    checkpointer: Checkpointer | None = None,
    on_epoch_end: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> TrainedModels:
    """Train one model per eligible customer of `data`, all at once on `device`."""
    started = time.perf_counter()
    device = torch.device(device)
    keep, skipped = eligible(data, hp)
    if not keep:
        empty = ForecasterParameters.initial(customer_keys([], hp.seed), hp.hidden, torch.device("cpu"))
        return TrainedModels((), empty, torch.zeros(0), torch.zeros(0), hp, skipped)
    if device.type == "cpu":
        keep_freed_memory()
    data = padded(data.subset(keep))
    mean_np, std_np = normalisation(data, hp)
    train_lengths = torch.as_tensor(data.lengths - hp.holdout_hours - hp.validation_hours, device=device)
    readings = torch.as_tensor(data.values, device=device)
    mean, std = torch.as_tensor(mean_np, device=device), torch.as_tensor(std_np, device=device)
    sampler = WindowSampler(readings, mean, std, hp.batch_size)
    keys = customer_keys(data.customers, hp.seed).to(device)
    starts_available = train_lengths - SPAN + 1  # >= 24 by eligibility (PADDING counts in the lengths)
    count = len(data.customers)

    params = ForecasterParameters.initial(keys.cpu(), hp.hidden, device)
    validation = Validation(readings, mean, std, train_lengths, hp.validation_hours)
    tensors = [t.requires_grad_() for t in params.tensors()]
    # The linear part only learns the lags of `lag_mask`: weights outside it get no gradient, so Adam never
    # moves them from 0 (4,032 free weights per customer overfit a few weeks of data; ~700 do not).
    mask = torch.ones(WINDOW, HORIZON + hp.hidden, device=device)
    mask[:, :HORIZON] = lag_mask().to(device)
    # The correction sees the window's last `correction_hours` only (0: none, its input weights stay 0, and so,
    # through relu(0), its output weights): on four weeks' input it overfits and the held-out MAPE rises.
    mask[: WINDOW - hp.correction_hours, HORIZON:] = 0.0
    with torch.no_grad():
        params.w_in[:, : WINDOW - hp.correction_hours, HORIZON:] = 0.0
    optimizer = torch.optim.Adam(tensors, lr=hp.learning_rate, fused=True)
    first_epoch, history = 0, []
    run_id = fingerprint(data, hp)
    state = checkpointer.load(run_id) if checkpointer else None
    if state is not None:
        with torch.no_grad():
            for tensor, saved in zip(tensors, state["params"], strict=True):
                tensor.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, history = state["epoch"], list(state["history"])
        validation.restore(state["validation"])
        print(f"train: resuming after epoch {first_epoch} from {checkpointer.path}", flush=True)
    else:
        validation.consider(params, 0)

    samples = torch.arange(hp.batch_size, device=device)
    epochs = tqdm(range(first_epoch, hp.epochs), desc=f"train: {count} customers on {device}", unit="epoch",
                  initial=first_epoch, total=hp.epochs, disable=not progress, mininterval=2)  # fmt: skip
    for epoch in epochs:
        total = torch.zeros((), device=device)
        for step in range(hp.steps_per_epoch):
            windows, target, weight, observed = sampler.batch(uniform(keys, epoch, step, samples), starts_available)
            # Each customer's mean relative error over its observed target hours (gaps weigh 0).
            per_customer = ((forward(params, windows) - target).abs() * weight).sum((1, 2)) / observed.clamp_min(1)
            optimizer.zero_grad(set_to_none=True)
            per_customer.sum().backward()
            params.w_in.grad.mul_(mask)
            optimizer.step()
            total += per_customer.detach().sum()
        history.append(float(total) / (count * hp.steps_per_epoch))
        validation.consider(params, epoch + 1)
        epochs.set_postfix(loss=f"{history[-1]:.4f}", validation=f"{float(validation.error.mean()):.4f}")
        if checkpointer:
            state = _state(params, optimizer, epoch + 1, history, run_id, validation)
            checkpointer.maybe_save(state, force=epoch + 1 == hp.epochs)
        if on_epoch_end:
            on_epoch_end(epoch + 1, history[-1])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return TrainedModels(
        customers=data.customers,
        params=validation.best.to("cpu"),
        mean=mean.cpu(),
        std=std.cpu(),
        hyperparameters=hp,
        skipped=skipped,
        history=history,
        chosen_epochs=validation.epoch.cpu(),
        device=str(device),
        seconds=time.perf_counter() - started,
    )


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


def _state(params, optimizer, epoch, history, run_id, validation) -> dict:
    return {
        "fingerprint": run_id,
        "epoch": epoch,
        "history": list(history),
        "params": [t.detach().cpu() for t in params.tensors()],
        "optimizer": optimizer.state_dict(),
        "validation": validation.state(),
    }
