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


def read_curated(directory: Path) -> SeriesSet:
    """Every customer under `directory` (recursively: customer=<id>/*.parquet, as SageMaker copies the S3 keys)."""
    if not directory.is_dir():
        raise StepInputError(f"curated input {directory} does not exist")
    files = sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise StepInputError(f"curated input {directory} holds no Parquet files (did prep write any customer?)")
    # customer ids are strings even when they look like numbers: never let partition inference drop a leading 0.
    partitioning = ds.partitioning(pa.schema([("customer", pa.string())]), flavor="hive")
    dataset = ds.dataset(
        [str(f) for f in files], format="parquet", partitioning=partitioning, partition_base_dir=str(directory)
    )
    table = dataset.to_table(columns=["customer", "timestamp", "reading"])
    if table.num_rows == 0:
        raise StepInputError(f"curated input {directory} holds {len(files)} Parquet file(s) but no rows")
    if table.column("customer").null_count:
        raise StepInputError(f"curated input {directory} has Parquet files outside customer=<id>/ directories")
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
