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
import pyarrow.dataset as ds

from pipelines.steps.paths import StepInputError

HOUR_US = 3_600_000_000
MAX_HISTORY_HOURS = 2 * 365 * 24  # older readings are not used: recent behaviour predicts better, memory is bounded


@dataclass(frozen=True)
class SeriesSet:
    customers: tuple[str, ...]  # sorted
    values: np.ndarray  # float32 [C, T], NaN = no reading
    lengths: np.ndarray  # int64 [C], hours from the first to the last reading, inclusive
    starts: np.ndarray  # int64 [C], first hour as microseconds since the epoch (UTC)

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
        )

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
    """The series of `customers` (default: every customer) under `directory`; `files` is `curated_files`'s
    answer when the caller already has it."""
    files = curated_files(directory) if files is None else files
    wanted = list(files) if customers is None else list(customers)
    missing = [c for c in wanted if c not in files]
    if missing:
        raise StepInputError(f"curated input {directory} lacks {len(missing)} customer(s), e.g. {missing[:5]}")
    paths = [str(path) for customer in wanted for path in files[customer]]
    # customer ids are strings even when they look like numbers: never let partition inference drop a leading 0.
    partitioning = ds.partitioning(pa.schema([("customer", pa.string())]), flavor="hive")
    dataset = ds.dataset(paths, format="parquet", partitioning=partitioning, partition_base_dir=str(directory))
    table = dataset.to_table(columns=["customer", "timestamp", "reading"])
    if table.num_rows == 0:
        raise StepInputError(f"curated input {directory} holds {len(paths)} Parquet file(s) but no rows")
    return from_table(table)


def from_table(table: pa.Table) -> SeriesSet:
    customer = table.column("customer").to_numpy(zero_copy_only=False).astype(str)
    micros = table.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    reading = table.column("reading").to_numpy().astype(np.float32)
    customers, codes = np.unique(customer, return_inverse=True)
    hour = micros // HOUR_US
    last = np.full(len(customers), np.iinfo(np.int64).min)
    np.maximum.at(last, codes, hour)
    first = np.full(len(customers), np.iinfo(np.int64).max)
    np.minimum.at(first, codes, hour)
    first = np.maximum(first, last - MAX_HISTORY_HOURS + 1)
    keep = hour >= first[codes]
    offset = hour[keep] - first[codes[keep]]
    lengths = last - first + 1
    values = np.full((len(customers), int(lengths.max())), np.nan, dtype=np.float32)
    values[codes[keep], offset] = reading[keep]  # curated rows are unique per (customer, hour)
    return SeriesSet(tuple(customers.tolist()), values, lengths.astype(np.int64), first * HOUR_US)
