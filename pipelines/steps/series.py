"""Curated Parquet (customer=<id>/ partitions, from either prep engine) -> one hourly series per customer.

Series are stacked in one float32 matrix [customers, hours], each customer's series starting at column 0 at its
own first reading (`starts`), NaN where the meter did not report, padded with NaN after its `lengths`. Training
and evaluation index into it with tensors, never with a Python loop over customers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.steps.cleaning import CURATED_COLUMNS
from pipelines.steps.paths import StepInputError

HOUR_US = 3_600_000_000
MAX_HISTORY_HOURS = 2 * 365 * 24  # older readings are not used: recent behaviour predicts better, memory is bounded


@dataclass(frozen=True)
class SeriesSet:
    customers: tuple[str, ...]  # sorted
    values: np.ndarray  # float32 [C, T], NaN = no reading
    lengths: np.ndarray  # int64 [C], hours from the first to the last reading, inclusive
    starts: np.ndarray  # int64 [C], first hour as microseconds since the epoch (UTC)
    empty: tuple[str, ...] = ()  # customers read whose files hold no row: no series, skipped with that reason

    def __len__(self) -> int:
        return len(self.customers)

    def subset(self, indices: list[int] | np.ndarray) -> SeriesSet:
        indices = np.asarray(indices, dtype=np.int64)
        width = int(self.lengths[indices].max()) if len(indices) else 0
        return SeriesSet(
            customers=tuple(self.customers[i] for i in indices),
            values=self.values[indices, :width],
            lengths=self.lengths[indices],
            starts=self.starts[indices],
        )  # `empty` stays behind: it names no row of the set

    def hours(self, index: int) -> pd.DatetimeIndex:
        """The UTC timestamps of customer `index`'s series."""
        start = pd.Timestamp(int(self.starts[index]), unit="us", tz="UTC")
        return pd.date_range(start, periods=int(self.lengths[index]), freq="h")


CUSTOMER_PARTITION = "customer="


def curated_files(directory: Path) -> dict[str, list[Path]]:
    """customer -> its Parquet files under `directory` (recursively: customer=<id>/*.parquet, as SageMaker copies
    the S3 keys), customers sorted. Reads no data: steps shard customers with it before reading any."""
    if not directory.is_dir():
        raise StepInputError(f"curated input {directory} does not exist")
    files = sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise StepInputError(f"curated input {directory} holds no Parquet files (did prep write any customer?)")
    by_customer: dict[str, list[Path]] = {}
    for path in files:
        folders = path.relative_to(directory).parts[:-1]
        partition = next((folder for folder in folders if folder.startswith(CUSTOMER_PARTITION)), None)
        if partition is None:
            raise StepInputError(f"curated input {directory} has Parquet files outside customer=<id>/ directories")
        by_customer.setdefault(partition.removeprefix(CUSTOMER_PARTITION), []).append(path)
    return dict(sorted(by_customer.items()))


def shards(customers: list[str] | tuple[str, ...], shard_customers: int) -> list[tuple[str, ...]]:
    """Sorted customers cut into consecutive shards of at most `shard_customers`: what a step holds in memory
    at once. Each customer's model and scores depend on its own data only, so the cut changes no result."""
    if shard_customers < 1:
        raise StepInputError(f"the shard size must be at least 1 customer, got {shard_customers}")
    ordered = tuple(sorted(customers))
    return [ordered[i : i + shard_customers] for i in range(0, len(ordered), shard_customers)]


def read_curated(
    directory: Path, customers: list[str] | tuple[str, ...] | None = None, files: dict[str, list[Path]] | None = None
) -> SeriesSet:
    """The series of `customers` (default: every customer) under `directory`, sorted by id; `files` is
    `curated_files`'s answer when the caller already has it. A customer whose files hold no row has no series and
    is named in `empty` (a shard of such customers alone is an empty set, not an error: the train step skips them
    with that reason, and fails only when no customer at all can be trained).

    Bounded memory: read one customer at a time (its files' two columns) and turned into its row of hours at once,
    so a read holds the series (4 B per hour) and one customer's records, whatever the number of customers: a
    table of every customer's records and its NumPy copies held ~250 B per record (~230 MB for 50 two-year
    customers) before this."""
    files = curated_files(directory) if files is None else files
    wanted = list(files) if customers is None else list(customers)
    missing = [c for c in wanted if c not in files]
    if missing:
        raise StepInputError(f"curated input {directory} lacks {len(missing)} customer(s), e.g. {missing[:5]}")
    names, firsts, rows, empty = [], [], [], []
    for customer in sorted(set(wanted)):
        found = _customer_row(files[customer])
        if found is None:
            empty.append(customer)
        else:
            names.append(customer)
            firsts.append(found[0])
            rows.append(found[1])
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    values = np.full((len(rows), int(lengths.max(initial=0))), np.nan, dtype=np.float32)
    for index in range(len(rows)):
        values[index, : lengths[index]] = rows[index]
        rows[index] = None  # freed as copied
    return SeriesSet(tuple(names), values, lengths, np.array(firsts, dtype=np.int64) * HOUR_US, tuple(empty))


def _customer_row(paths: list[Path]) -> tuple[int, np.ndarray] | None:
    """(first hour since the epoch, float32 readings from it to the last hour, NaN = no reading) of one customer's
    files, the last MAX_HISTORY_HOURS at most; None when they hold no row."""
    hours, readings = [], []
    for path in paths:
        table = _read_file(path)
        timestamps = table.column("timestamp")
        if timestamps.null_count:
            raise StepInputError(f"curated file {path} has {timestamps.null_count} row(s) without a timestamp: "
                                 "prep writes none; run prep again on the raw input")  # fmt: skip
        try:
            micros = timestamps.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise StepInputError(f"curated file {path}: its timestamp column ({timestamps.type}) is not a UTC time "
                                 f"({error}); run prep again on the raw input") from None  # fmt: skip
        hours.append(micros // HOUR_US)
        readings.append(table.column("reading").to_numpy().astype(np.float32))
    hour, reading = np.concatenate(hours), np.concatenate(readings)
    if not len(hour):
        return None
    last = int(hour.max())
    first = max(int(hour.min()), last - MAX_HISTORY_HOURS + 1)
    keep = hour >= first
    row = np.full(last - first + 1, np.nan, dtype=np.float32)
    row[hour[keep] - first] = reading[keep]  # curated rows are unique per (customer, hour)
    return first, row


def _read_file(path: Path) -> pa.Table:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise StepInputError(f"curated file {path} is not readable Parquet ({error}); run prep again") from None
    absent = [name for name in CURATED_COLUMNS if name not in parquet.schema_arrow.names]
    if absent:
        raise StepInputError(f"curated file {path} lacks column(s) {', '.join(absent)} (prep writes "
                             f"{', '.join(CURATED_COLUMNS)}); run prep again on the raw input")  # fmt: skip
    return parquet.read(columns=list(CURATED_COLUMNS))
