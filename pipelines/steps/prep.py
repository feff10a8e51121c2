"""Prep step (SageMaker Processing): raw JSON lines -> cleaned, typed, de-duplicated Parquet per customer.

Reads every file under /opt/ml/processing/input/raw (recursively; `.gz` files are decompressed; names starting
with `.` or `_` are ignored) and writes
- curated/customer=<id>/part-00000.parquet: columns timestamp (UTC, hourly, microseconds), reading (kWh),
  sorted by time; one file per customer, so that training can shard customers across hosts by S3 key;
- quarantine/quarantine.jsonl: one JSON object per rejected record: reason, detail, source (file:line), raw;
- report/prep_report.json: counts (cleaning.PrepReport), where records_read = rows_written +
  duplicates_removed + quarantined_total.
The transformation is pipelines/steps/cleaning.py, shared with the Glue engine. Files are parsed in parallel
(one process per core); deduplication then sees every customer's records at once.

Fails (exit status 1, message in the job's ExitMessage) when the input is missing or holds no record, and when
no record is valid (after writing the quarantine and the report, so the reasons can be read).

Runtime: `python pipelines/steps/prep.py [--workers N]` from the source bundle (pipelines/steps/paths.py
RUNTIME_SOURCES); needs pandas, numpy, pyarrow, tqdm.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
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


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        return handle.read().splitlines()


def parse_file(path: Path, name: str) -> tuple[pd.DataFrame, int]:
    """One file's tagged rows (not yet de-duplicated) and its count of blank lines."""
    lines = _read_lines(path)
    return cleaning.parse_lines(lines, name), cleaning.count_blank(lines)


def _parse_all(files: list[Path], raw: Path, workers: int) -> list[tuple[pd.DataFrame, int]]:
    names = [str(path.relative_to(raw)) for path in files]
    progress = {"desc": "prep: parsing files", "total": len(files), "unit": "file", "mininterval": 2}
    if workers <= 1 or len(files) == 1:
        return [parse_file(path, name) for path, name in tqdm(zip(files, names, strict=True), **progress)]
    # spawn, not fork: never fork a process whose libraries may already run threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(tqdm(pool.map(parse_file, files, names, chunksize=1), **progress))


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


def run(paths: PrepPaths, workers: int = 1) -> cleaning.PrepReport:
    files = input_files(paths.raw)
    parsed = _parse_all(files, paths.raw, workers)
    report = cleaning.PrepReport(engine="processing", input_files=len(files))
    report.blank_lines = sum(blank for _, blank in parsed)
    tagged = [frame for frame, _ in parsed]
    report.records_read = sum(len(frame) for frame in tagged)
    if report.records_read == 0:
        raise StepInputError(f"raw input {paths.raw} holds {len(files)} file(s) but no records (all empty)")

    quarantine = [cleaning.quarantined_rows(frame) for frame in tagged]
    valid = pd.concat([cleaning.valid_rows(frame) for frame in tagged], ignore_index=True)
    del tagged, parsed
    resolved = cleaning.deduplicate(valid)
    del valid
    for frame in (*quarantine, resolved):
        report.add(frame)
    report.check_balance()

    for directory in (paths.curated, paths.quarantine, paths.report):
        _clear(directory)
    report.customers = write_curated(cleaning.valid_rows(resolved), paths.curated)
    with (paths.quarantine / QUARANTINE_FILE).open("w") as handle:
        for frame in (*quarantine, resolved):
            for record in cleaning.quarantine_records(frame):
                handle.write(json.dumps(record) + "\n")
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
    args = parser.parse_args(argv)
    try:
        report = run(PrepPaths.from_environ(environ), workers=args.workers)
    except StepInputError as error:
        return fail(f"prep: {error}", environ)
    print(f"prep: {report.to_json()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
