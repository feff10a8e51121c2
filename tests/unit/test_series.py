"""Curated Parquet -> SeriesSet (pipelines/steps/series.py): every step's read. Known series are written as prep
writes them (customer=<id>/ partitions; here split over files and row groups) and must come back bit for bit,
with a read's memory set by the series and one customer's records, and bad input refused by name."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.steps import series
from pipelines.steps.paths import StepInputError

HOUR = series.HOUR_US
EPOCH_HOUR = 490_000  # an hour in 2025, as hours since the epoch


def write_customer(directory: Path, customer: str, hours: np.ndarray, readings: np.ndarray, files: int = 1,
                   row_group: int | None = None) -> None:  # fmt: skip
    """Rows (UTC hour since the epoch, kWh) of one customer as prep writes them, cut into `files` files."""
    folder = directory / f"customer={customer}"
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in enumerate(np.array_split(np.arange(len(hours)), files)):
        table = pa.table({
            "timestamp": pa.array(hours[rows] * HOUR, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "reading": pa.array(readings[rows], pa.float64()),
        })  # fmt: skip
        pq.write_table(table, folder / f"part-{part:05d}.parquet", row_group_size=row_group)


def known_series(customers: int, seed: int) -> dict[str, tuple[int, np.ndarray]]:
    """customer -> (first hour, float32 series with NaN gaps); different starts and lengths, ids that look like
    numbers (a leading 0 must stay)."""
    rng = np.random.default_rng(seed)
    found = {}
    for index in range(customers):
        length = int(rng.integers(30, 400))
        values = rng.gamma(2.0, 1.5, length).astype(np.float32)
        values[rng.random(length) < 0.1] = np.nan
        values[[0, -1]] = rng.gamma(2.0, 1.5, 2).astype(np.float32)  # the first and last hours are readings
        found[f"{index:03d}"] = (EPOCH_HOUR + int(rng.integers(0, 200)), values)
    return found


def write_series(directory: Path, known: dict[str, tuple[int, np.ndarray]], files: int, row_group: int) -> None:
    for customer, (first, values) in known.items():
        hours = first + np.flatnonzero(~np.isnan(values))
        write_customer(directory, customer, hours, values[~np.isnan(values)].astype(np.float64), files, row_group)


def assert_series(data: series.SeriesSet, known: dict[str, tuple[int, np.ndarray]]) -> None:
    assert data.customers == tuple(sorted(known))
    width = max(len(values) for _, values in known.values())
    expected = np.full((len(known), width), np.nan, dtype=np.float32)
    for row, customer in enumerate(data.customers):
        expected[row, : len(known[customer][1])] = known[customer][1]
    assert data.values.dtype == np.float32
    np.testing.assert_array_equal(data.values, expected)  # NaN where no reading and after each customer's end
    np.testing.assert_array_equal(data.lengths, [len(known[c][1]) for c in data.customers])
    np.testing.assert_array_equal(data.starts, [known[c][0] * HOUR for c in data.customers])


@pytest.mark.parametrize(("files", "row_group"), [(1, None), (3, 17)])
def test_known_series_come_back_bit_for_bit_whatever_files_and_row_groups_hold_them(tmp_path, files, row_group):
    """A customer's rows in one file, or straddling three files of 17-row row groups: the same series."""
    known = known_series(12, seed=5)
    write_series(tmp_path, known, files, row_group)
    assert_series(series.read_curated(tmp_path), known)


def test_a_read_of_some_customers_is_their_rows_of_the_whole_read(tmp_path):
    """Steps read a shard of customers at a time: the rows of one read of everyone, trimmed to the shard's
    longest series; asked in any order (and twice), the customers come back sorted, once each."""
    known = known_series(12, seed=6)
    write_series(tmp_path, known, files=2, row_group=50)
    whole = series.read_curated(tmp_path)
    files = series.curated_files(tmp_path)
    part = series.read_curated(tmp_path, ["010", "002", "007", "002"], files)
    expected = whole.subset([whole.customers.index(c) for c in ("002", "007", "010")])
    assert part.customers == expected.customers
    np.testing.assert_array_equal(part.values, expected.values)
    np.testing.assert_array_equal(part.lengths, expected.lengths)
    np.testing.assert_array_equal(part.starts, expected.starts)


def test_only_the_last_two_years_of_a_longer_history_are_read(tmp_path):
    hours = EPOCH_HOUR + np.arange(series.MAX_HISTORY_HOURS + 10)
    write_customer(tmp_path, "long", hours, np.arange(len(hours), dtype=np.float64), files=2)
    data = series.read_curated(tmp_path)
    assert data.lengths.tolist() == [series.MAX_HISTORY_HOURS]
    assert data.starts.tolist() == [(EPOCH_HOUR + 10) * HOUR]
    np.testing.assert_array_equal(data.values[0], np.arange(10, len(hours), dtype=np.float32))


def test_a_customer_whose_files_hold_no_row_has_no_series_and_is_named(tmp_path):
    known = known_series(3, seed=7)
    write_series(tmp_path, known, files=1, row_group=100)
    write_customer(tmp_path, "empty", np.zeros(0, dtype=np.int64), np.zeros(0), files=2)
    whole = series.read_curated(tmp_path)
    assert_series(whole, known)
    assert whole.empty == ("empty",)
    alone = series.read_curated(tmp_path, ["empty"])  # a shard of it alone: an empty set, not an error
    assert (alone.customers, alone.values.shape, alone.empty) == ((), (0, 0), ("empty",))


def test_a_read_holds_the_series_and_one_customers_records_not_every_record(tmp_path):
    """Bounded memory: the NumPy memory a read allocates at its peak is set by the series it returns (twice:
    each customer's row, then the matrix) and one customer's records, not by the records of every customer
    at once (~80 B each in the former whole-table read: 14 MB here, 20 times the series)."""
    hours = EPOCH_HOUR + np.arange(24 * 365)
    for index in range(20):
        write_customer(tmp_path, f"c{index:02d}", hours, np.full(len(hours), 1.0 + index), row_group=2000)
    files = series.curated_files(tmp_path)
    tracemalloc.start()
    try:
        data = series.read_curated(tmp_path, None, files)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.values.shape == (20, len(hours))
    assert peak < 4 * data.values.nbytes, f"a read's peak was {peak / 1e6:.1f} MB for {data.values.nbytes} B"


UTC = pa.timestamp("us", tz="UTC")


def curated_with(directory: Path, table: pa.Table | None, text: str = "") -> Path:
    """A curated input of one customer whose one file holds `table` (or the bytes of `text`)."""
    folder = directory / "curated" / "customer=c1"
    folder.mkdir(parents=True)
    if table is None:
        (folder / "part-00000.parquet").write_text(text)
    else:
        pq.write_table(table, folder / "part-00000.parquet")
    return folder.parent


def empty(directory: Path) -> Path:
    (directory / "curated" / "customer=c1").mkdir(parents=True)
    return directory / "curated"


def outside_partitions(directory: Path) -> Path:
    curated_with(directory, pa.table({"timestamp": pa.array([0], UTC), "reading": [1.0]}))
    (directory / "curated" / "customer=c1").rename(directory / "curated" / "elsewhere")
    return directory / "curated"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nowhere", r"curated input .*nowhere does not exist"),
        (empty, r"holds no Parquet files \(did prep write any customer\?\)"),
        (outside_partitions, r"has Parquet files outside customer=<id>/ directories"),
        (lambda d: curated_with(d, None, "not parquet"), r"part-00000.parquet is not readable Parquet .*run prep"),
        (lambda d: curated_with(d, pa.table({"timestamp": pa.array([0], UTC)})),
         r"lacks column\(s\) reading \(prep writes timestamp, reading\); run prep again"),
        (lambda d: curated_with(d, pa.table({"timestamp": pa.array([None, 0], UTC), "reading": [1.0, 2.0]})),
         r"has 1 row\(s\) without a timestamp"),
        (lambda d: curated_with(d, pa.table({"timestamp": ["yesterday"], "reading": [1.0]})),
         r"its timestamp column \(string\) is not a UTC time"),
    ],
    ids=["missing", "empty", "outside-partitions", "not-parquet", "no-reading", "null-timestamp", "text-timestamp"],
)  # fmt: skip
def test_malformed_curated_input_is_refused_by_name(tmp_path, make, message):
    with pytest.raises(StepInputError, match=message):
        series.read_curated(make(tmp_path))


def test_a_customer_the_caller_names_but_the_input_lacks_is_refused(tmp_path):
    write_series(tmp_path, known_series(2, seed=8), files=1, row_group=100)
    with pytest.raises(StepInputError, match=r"lacks 1 customer\(s\), e.g. \['999'\]"):
        series.read_curated(tmp_path, ["000", "999"])
