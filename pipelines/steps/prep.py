"""Prep step (SageMaker Processing): raw JSON lines -> cleaned, typed, de-duplicated Parquet per customer.

Reads every file under /opt/ml/processing/input/raw (recursively; `.gz` files are decompressed; names starting
with `.` or `_` are ignored) and writes
- curated/customer=<id>/part-00000.parquet: columns timestamp (UTC, hourly, microseconds), reading (kWh),
  sorted by time; one file per customer, so that training can shard customers across hosts by S3 key;
- quarantine/quarantine.jsonl: one JSON object per rejected record: reason, detail, source (file:line), raw;
- report/prep_report.json: counts (cleaning.PrepReport), where records_read = rows_written +
  duplicates_removed + quarantined_total.
The transformation is pipelines/steps/cleaning.py, shared with the Glue engine.

Bounded memory, in two passes (one process per core in each): (1) every file is read in chunks of CHUNK_LINES
lines, parsed, its rejects appended to the quarantine and its valid rows spilled to one of N shards by a hash of
the customer id (Parquet pieces under a spill directory next to the outputs); (2) each shard is read back alone,
de-duplicated (a customer's records are all in one shard) and written per customer. N is set so that a shard holds
about --shard-mb of raw input, so peak memory is set by the chunk and shard sizes, not by the number of customers
or files (bench/bench_scale.py measures it).

Fails (exit status 1, message in the job's ExitMessage) when the input is missing or holds no record, and when
no record is valid (after writing the quarantine and the report, so the reasons can be read).

Runtime: `python pipelines/steps/prep.py [--workers N] [--shard-mb MB]` from the source bundle (pipelines/steps/paths.py
RUNTIME_SOURCES); needs pandas, numpy, pyarrow, tqdm.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script (SageMaker): make the source bundle's root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipelines.steps import cleaning
from pipelines.steps.paths import (
    PREP_RAW,
    PREP_REPORT_FILE,
    PrepPaths,
    StepInputError,
    container_path,
    fail,
)

QUARANTINE_FILE = "quarantine.jsonl"
PART_FILE = "part-00000.parquet"


def input_files(raw: Path) -> list[Path]:
    if not raw.is_dir():
        raise StepInputError(
            f"raw input {raw} does not exist: the Processing input must be mounted at {container_path(PREP_RAW)}"
        )
    files = sorted(
        path
        for path in raw.rglob("*")
        if path.is_file() and not any(part.startswith((".", "_")) for part in path.relative_to(raw).parts)
    )
    if not files:
        raise StepInputError(f"raw input {raw} holds no files: nothing to prepare (is the input S3 URI right?)")
    return files


CHUNK_LINES = 200_000  # lines parsed at once (~70 MB of parsed rows)
SHARD_MB = 512  # raw input per de-duplication shard (~4 M records; ~1.5 GB while de-duplicated)
SPILL = ".prep-spill"  # next to the outputs (the processing volume), never under one: it is not uploaded


def _chunks(path: Path, size: int) -> Iterator[tuple[int, list[str]]]:
    """(number of the first line, lines) of at most `size` lines, read as a stream (`.gz` decompressed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        first = 1
        while lines := [line.rstrip("\r\n") for line in itertools.islice(handle, size)]:
            yield first, lines
            first += len(lines)


def raw_size(path: Path) -> int:
    """Bytes of raw text in the file: a gzip member's trailer holds its size (mod 2**32; enough for an estimate)."""
    size = path.stat().st_size
    if path.suffix != ".gz" or size < 18:  # 18: the smallest gzip member (a broken one fails when it is read)
        return size
    with path.open("rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return int.from_bytes(handle.read(4), "little")


def shard_count(files: list[Path], shard_mb: float) -> int:
    return max(1, math.ceil(sum(raw_size(path) for path in files) / (shard_mb * 1e6)))


def shard_of(customers: np.ndarray, shards: int) -> np.ndarray:
    """The shard of each customer id: a stable hash (crc32), so every record of a customer meets in one shard."""
    unique, codes = np.unique(customers.astype(str), return_inverse=True)
    return np.array([zlib.crc32(c.encode()) % shards for c in unique], dtype=np.int64)[codes]


@dataclass(frozen=True)
class _Spill:
    directory: Path
    shards: int
    chunk_lines: int

    def piece(self, shard: int, name: str) -> Path:
        return self.directory / f"shard-{shard:05d}" / f"{name}.parquet"

    def quarantine(self, name: str) -> Path:
        return self.directory / "quarantine" / f"{name}.jsonl"


def parse_file(path: Path, name: str, number: int, spill: _Spill) -> cleaning.PrepReport:
    """Pass 1 for one file: its counts; its rejects and valid rows go to the spill directory."""
    report = cleaning.PrepReport(engine="processing")
    with spill.quarantine(f"{number:06d}").open("w") as quarantine:
        for first, lines in _chunks(path, spill.chunk_lines):
            report.blank_lines += cleaning.count_blank(lines)
            tagged = cleaning.parse_lines(lines, name, first_line=first)
            report.records_read += len(tagged)
            rejected = cleaning.quarantined_rows(tagged)
            report.add(rejected)
            for record in cleaning.quarantine_records(rejected):
                quarantine.write(json.dumps(record) + "\n")
            valid = cleaning.valid_rows(tagged)
            if valid.empty:
                continue
            table = curated_table(valid).append_column("customer", pa.array(valid["customer"], pa.string()))
            shards = shard_of(valid["customer"].to_numpy(), spill.shards)
            for shard in np.unique(shards):
                piece = spill.piece(int(shard), f"{number:06d}-{first:012d}")
                piece.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table.filter(pa.array(shards == shard)), piece)
    return report


def resolve_shard(shard: int, spill: _Spill, curated: Path) -> cleaning.PrepReport:
    """Pass 2 for one shard: de-duplicate its customers, write them to `curated`, conflicts to the spill."""
    report = cleaning.PrepReport(engine="processing")
    pieces = sorted(spill.piece(shard, "x").parent.glob("*.parquet"))
    if not pieces:
        return report
    table = pa.concat_tables([pq.read_table(piece) for piece in pieces])
    rows = cleaning.valid_frame(
        table.column("customer").to_numpy(zero_copy_only=False),
        table.column("timestamp").to_pandas(),
        table.column("reading").to_numpy(),
    )
    del table
    resolved = cleaning.deduplicate(rows)
    del rows
    report.add(resolved)
    report.customers = write_curated(cleaning.valid_rows(resolved), curated)
    with spill.quarantine(f"~conflicts-{shard:05d}").open("w") as quarantine:  # '~' sorts after the files' own
        for record in cleaning.quarantine_records(resolved):
            quarantine.write(json.dumps(record) + "\n")
    return report


def _in_parallel(function, arguments: list[tuple], workers: int, description: str) -> list:
    progress = {"desc": description, "total": len(arguments), "mininterval": 2}
    if workers <= 1 or len(arguments) == 1:
        return [function(*args) for args in tqdm(arguments, **progress)]
    # spawn, not fork: never fork a process whose libraries may already run threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(tqdm(pool.map(function, *zip(*arguments, strict=True), chunksize=1), **progress))


def _clear(directory: Path) -> None:
    """Prep owns its output directories; remove what an earlier local run left there (only our own files)."""
    directory.mkdir(parents=True, exist_ok=True)
    for child in directory.iterdir():
        if child.is_dir() and child.name.startswith("customer="):
            shutil.rmtree(child)
        elif child.name in (QUARANTINE_FILE, PREP_REPORT_FILE):
            child.unlink()


def curated_table(rows: pd.DataFrame) -> pa.Table:
    """timestamp as Parquet TIMESTAMP(MICROS, UTC), reading as DOUBLE: the curated schema of both engines."""
    utc = rows["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[us]")
    return pa.table(
        {
            "timestamp": pa.array(utc, type=pa.timestamp("us", tz="UTC")),
            "reading": pa.array(rows["reading"].to_numpy(), type=pa.float64()),
        }
    )


def write_curated(rows: pd.DataFrame, curated: Path) -> int:
    """One Parquet file per customer (rows sorted by customer, then time). Returns the number of customers."""
    if rows.empty:
        return 0
    customers = rows["customer"].to_numpy()
    codes, _ = pd.factorize(customers)
    boundaries = [0, *(np.flatnonzero(np.diff(codes)) + 1).tolist()]
    ends = [*boundaries[1:], len(customers)]
    table = curated_table(rows)
    for start, end in tqdm(
        zip(boundaries, ends, strict=True), desc="prep: writing customers", total=len(ends), mininterval=2
    ):
        directory = curated / f"customer={customers[start]}"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(start, end - start), directory / PART_FILE)
    return len(ends)


def run(
    paths: PrepPaths, workers: int = 1, shard_mb: float = SHARD_MB, chunk_lines: int = CHUNK_LINES
) -> cleaning.PrepReport:
    if shard_mb <= 0:
        raise StepInputError(f"--shard-mb must be positive, got {shard_mb}")
    files = input_files(paths.raw)
    spill = _Spill(paths.curated.parent / SPILL, shard_count(files, shard_mb), chunk_lines)
    shutil.rmtree(spill.directory, ignore_errors=True)
    (spill.directory / "quarantine").mkdir(parents=True)
    try:
        return _run(paths, files, spill, workers)
    finally:
        shutil.rmtree(spill.directory, ignore_errors=True)


def _run(paths: PrepPaths, files: list[Path], spill: _Spill, workers: int) -> cleaning.PrepReport:
    names = [str(path.relative_to(paths.raw)) for path in files]
    parsed = _in_parallel(
        parse_file, [(f, n, i, spill) for i, (f, n) in enumerate(zip(files, names, strict=True))], workers,
        "prep: parsing files",
    )  # fmt: skip
    report = cleaning.PrepReport(engine="processing", input_files=len(files))
    for part in parsed:
        report.merge(part)
    if report.records_read == 0:
        raise StepInputError(f"raw input {paths.raw} holds {len(files)} file(s) but no records (all empty)")
    for directory in (paths.curated, paths.quarantine, paths.report):
        _clear(directory)
    shards = [(shard, spill, paths.curated) for shard in range(spill.shards)]
    for part in _in_parallel(resolve_shard, shards, workers, f"prep: {spill.shards} shard(s)"):
        report.merge(part)
    report.check_balance()
    with (paths.quarantine / QUARANTINE_FILE).open("wb") as quarantine:  # the files' rejects, then conflicts
        for piece in sorted((spill.directory / "quarantine").iterdir()):
            with piece.open("rb") as source:
                shutil.copyfileobj(source, quarantine)
    (paths.report / PREP_REPORT_FILE).write_text(report.to_json())
    if report.rows_written == 0:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(report.quarantined.items()))
        raise StepInputError(
            f"none of the {report.records_read} records is valid ({reasons}); see {paths.quarantine / QUARANTINE_FILE}"
        )
    return report


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(description="ModelGate prep: raw JSON lines -> curated Parquet per customer")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel parsing processes")
    parser.add_argument("--shard-mb", "--shard_mb", dest="shard_mb", type=float, default=SHARD_MB,
                        help="raw input (MB) per de-duplication shard: sets peak memory")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        report = run(PrepPaths.from_environ(environ), workers=args.workers, shard_mb=args.shard_mb)
    except StepInputError as error:
        return fail(f"prep: {error}", environ)
    print(f"prep: {report.to_json()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
