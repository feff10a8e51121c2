"""Synthetic IoT meter readings, so that the whole pipeline runs offline: JSON lines like an ingestion service
(e.g. Firehose) would land them in the raw bucket, one file per UTC day, records in arrival (shuffled) order.

Each customer has one meter reporting hourly energy use (kWh) shaped like real consumption:
- a load profile by kind (residential: morning and evening peaks; commercial: business hours on weekdays;
  industrial: shifts), in the customer's own time zone, with a weekly pattern;
- yearly seasonality (winter heating peak), a slow trend, and autocorrelated multiplicative noise;
- outages (gaps of 1 to 72 hours), and customers that start reporting later than others.
Ingestion defects, each counted in the returned `GeneratedDataset` so tests can check every record's fate:
- exact re-sends (duplicates, sometimes in the next day's file), and a few conflicting re-sends;
- malformed records of several kinds (see MALFORMED_KINDS: the prep reason each one must end in);
- heterogeneous but valid encodings: some meters report in Wh, with local UTC offsets, or seconds past the hour.

Seeded and vectorised: 1,000 customers x 90 days (2.2 M records) takes a few seconds.
CLI: `python -m pipelines.datagen --customers 1000 --days 90 --out .demo/data` (prints the summary as JSON).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.steps import cleaning

# kind -> the reason prep must quarantine it with
MALFORMED_KINDS: dict[str, str] = {
    "truncated_line": cleaning.INVALID_JSON,
    "json_array": cleaning.NOT_AN_OBJECT,
    "missing_reading": cleaning.MISSING_FIELD,
    "null_customer": cleaning.MISSING_FIELD,
    "bad_customer_id": cleaning.INVALID_CUSTOMER_ID,
    "naive_timestamp": cleaning.INVALID_TIMESTAMP,
    "impossible_date": cleaning.INVALID_TIMESTAMP,
    "clock_reset": cleaning.TIMESTAMP_OUT_OF_RANGE,
    "reading_text": cleaning.INVALID_READING,
    "reading_nan": cleaning.INVALID_READING,
    "unknown_unit": cleaning.UNKNOWN_UNIT,
}

KINDS = ("residential", "commercial", "industrial")
# Relative load by local hour of day, per kind.
_PROFILES = {
    "residential": np.array(
        [.45, .4, .38, .37, .38, .45, .7, 1.0, .95, .7, .6, .6,
         .65, .6, .58, .62, .8, 1.1, 1.35, 1.4, 1.3, 1.1, .85, .6]
    ),
    "commercial": np.array(
        [.3, .3, .3, .3, .3, .35, .5, .8, 1.2, 1.4, 1.5, 1.5,
         1.45, 1.5, 1.5, 1.45, 1.35, 1.1, .7, .5, .4, .35, .3, .3]
    ),
    "industrial": np.array(
        [.8, .8, .8, .8, .8, .85, 1.2, 1.3, 1.3, 1.3, 1.3, 1.25,
         1.2, 1.3, 1.3, 1.3, 1.25, 1.2, .9, .85, .8, .8, .8, .8]
    ),
}  # fmt: skip
# Relative load by local day of week (Monday first), per kind.
_WEEKLY = {
    "residential": np.array([1.0, 1.0, 1.0, 1.0, 1.02, 1.12, 1.15]),
    "commercial": np.array([1.0, 1.02, 1.02, 1.0, .95, .35, .25]),
    "industrial": np.array([1.0, 1.0, 1.0, 1.0, 1.0, .7, .55]),
}  # fmt: skip


@dataclass(frozen=True)
class DatasetSpec:
    customers: int = 100
    days: int = 42
    start: str = "2026-01-05"  # a Monday, UTC
    seed: int = 7
    malformed_rate: float = 0.001  # malformed records, as a fraction of the valid ones (at least one per kind)
    duplicate_rate: float = 0.01  # exact re-sends
    conflict_rate: float = 0.0005  # re-sends with a different reading for the same hour
    outages_per_month: float = 2.0  # per customer; each 1..72 hours
    late_start_share: float = 0.2  # customers whose meter starts reporting up to 30 % into the period
    wh_share: float = 0.05  # meters reporting in Wh instead of kWh
    gzip: bool = False  # write .jsonl.gz instead of .jsonl

    def __post_init__(self) -> None:
        if self.customers < 1 or self.days < 1:
            raise ValueError(f"need at least one customer and one day, got {self.customers} and {self.days}")
        for name in ("malformed_rate", "duplicate_rate", "conflict_rate", "late_start_share", "wh_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class GeneratedDataset:
    """What was written, and what prep must make of it."""

    files: list[str]
    customers: int
    hours_per_customer: int
    lines: int  # records written (every line is non-blank)
    valid_hours: int  # distinct valid (customer, hour) readings emitted
    duplicates: int  # extra identical copies: prep removes them (counted, not quarantined)
    conflicting_hours: int  # hours re-sent with a different reading: both copies are quarantined
    malformed: dict[str, int] = field(default_factory=dict)  # by MALFORMED_KINDS kind

    @property
    def expected_rows(self) -> int:
        return self.valid_hours - self.conflicting_hours

    def expected_quarantine(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for kind, count in self.malformed.items():
            counts[MALFORMED_KINDS[kind]] += count
        if self.conflicting_hours:
            counts[cleaning.CONFLICTING_DUPLICATE] += 2 * self.conflicting_hours
        return dict(counts)

    def to_json(self) -> str:
        return json.dumps(
            {**asdict(self), "expected_rows": self.expected_rows, "expected_quarantine": self.expected_quarantine()},
            indent=1,
        )


def customer_ids(count: int) -> list[str]:
    return [f"cust-{index:05d}" for index in range(1, count + 1)]


def _signal(spec: DatasetSpec, rng: np.random.Generator, hours: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Readings [customers, hours] in kWh, and each customer's UTC offset in hours."""
    count, length = spec.customers, len(hours)
    kind = rng.choice(len(KINDS), size=count, p=[0.6, 0.3, 0.1])
    offset = rng.choice([-8, -6, -5, 0, 1, 2], size=count)
    base = np.exp(rng.normal(np.log([1.0, 6.0, 40.0])[kind], 0.5))
    local = hours.hour.to_numpy()[None, :] + offset[:, None]
    local_hour = local % 24
    local_day = (hours.day_of_week.to_numpy()[None, :] + local // 24) % 7
    profiles = np.stack([_PROFILES[k] for k in KINDS])[kind]  # [C, 24]
    weekly = np.stack([_WEEKLY[k] for k in KINDS])[kind]  # [C, 7]
    shape = np.take_along_axis(profiles, local_hour, axis=1) * np.take_along_axis(weekly, local_day, axis=1)
    # Individual customers differ from their kind's profile: sharper or flatter peaks.
    shape = shape ** rng.uniform(0.7, 1.3, size=(count, 1))
    day_of_year = hours.day_of_year.to_numpy()[None, :]
    winter = 1 + rng.uniform(0.05, 0.35, size=(count, 1)) * np.cos(2 * np.pi * (day_of_year - 15) / 365.25)
    years = (np.arange(length) / (24 * 365.25))[None, :]
    trend = 1 + rng.normal(0, 0.08, size=(count, 1)) * years
    # AR(1) noise in log space: consumption stays high or low for a few hours at a time.
    sigma = rng.uniform(0.04, 0.12, size=count)
    shocks = rng.normal(0, 1, size=(count, length)) * sigma[:, None]
    noise = np.empty_like(shocks)
    noise[:, 0] = shocks[:, 0]
    for hour in range(1, length):
        noise[:, hour] = 0.6 * noise[:, hour - 1] + shocks[:, hour]
    return base[:, None] * shape * winter * trend * np.exp(noise), offset


def _present(spec: DatasetSpec, rng: np.random.Generator, length: int) -> np.ndarray:
    """Which hours each meter reported: late starts and outages removed."""
    present = np.ones((spec.customers, length), dtype=bool)
    late = rng.random(spec.customers) < spec.late_start_share
    starts = (rng.random(spec.customers) * 0.3 * length).astype(int) * late
    present &= np.arange(length)[None, :] >= starts[:, None]
    outages = rng.poisson(spec.outages_per_month * length / (30 * 24), size=spec.customers)
    for customer in np.flatnonzero(outages):
        for begin, span in zip(
            rng.integers(0, length, size=outages[customer]),
            np.minimum(rng.geometric(1 / 8, size=outages[customer]), 72),
            strict=True,
        ):
            present[customer, begin : begin + span] = False
    return present


def _timestamp_texts(hours: pd.DatetimeIndex, offset: int, seconds_past: int) -> list[str]:
    local = hours + pd.Timedelta(hours=offset) + pd.Timedelta(seconds=seconds_past)
    if offset == 0:
        return list(local.strftime("%Y-%m-%dT%H:%M:%SZ"))
    sign = "+" if offset > 0 else "-"
    return list(local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{abs(offset):02d}:00")


def _malformed_line(kind: str, customer: str, stamp: str, rng: np.random.Generator) -> str:
    record = {"customer_id": customer, "device_id": "meter-x", "timestamp": stamp, "reading": 1.234, "unit": "kWh"}
    if kind == "truncated_line":
        text = json.dumps(record)
        return text[: int(rng.integers(5, len(text) - 2))]
    if kind == "json_array":
        return json.dumps([customer, stamp, 1.234])
    if kind == "missing_reading":
        del record["reading"]
    elif kind == "null_customer":
        record["customer_id"] = None
    elif kind == "bad_customer_id":
        record["customer_id"] = customer.upper().replace("-", " #")
    elif kind == "naive_timestamp":
        record["timestamp"] = stamp.removesuffix("Z")
    elif kind == "impossible_date":
        record["timestamp"] = stamp[:5] + "02-30" + stamp[10:]
    elif kind == "clock_reset":
        record["timestamp"] = "1970-01-01T00:00:00Z"
    elif kind == "reading_text":
        record["reading"] = "n/a"
    elif kind == "reading_nan":
        return json.dumps(record).replace("1.234", "NaN")
    elif kind == "unknown_unit":
        record["unit"] = "MJ"
    return json.dumps(record)


def generate(spec: DatasetSpec, out_dir: str | Path) -> GeneratedDataset:
    """Write the data set under `out_dir` (one file per UTC day) and return what it holds."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(spec.seed)
    hours = pd.date_range(pd.Timestamp(spec.start, tz="UTC"), periods=spec.days * 24, freq="h")
    length = len(hours)
    values, offsets = _signal(spec, rng, hours)
    present = _present(spec, rng, length)
    customers = customer_ids(spec.customers)
    in_wh = rng.random(spec.customers) < spec.wh_share
    style = rng.choice(3, size=spec.customers, p=[0.8, 0.1, 0.1])  # 0: Z, 1: local offset, 2: seconds past
    utc_texts = _timestamp_texts(hours, 0, 0)

    lines: list[str] = []
    days: list[int] = []
    for index, customer in enumerate(customers):
        reported = np.flatnonzero(present[index])
        if style[index] == 1:
            texts = _timestamp_texts(hours, int(offsets[index]), 0)
        elif style[index] == 2:
            texts = _timestamp_texts(hours, 0, int(rng.integers(1, 600)))
        else:
            texts = utc_texts
        head = f'{{"customer_id":"{customer}","device_id":"meter-{index:05x}","timestamp":"'
        if in_wh[index]:
            readings = [f"{value:.1f}" for value in np.round(values[index, reported] * 1000, 1)]
            tail = ',"unit":"Wh"}'
        else:
            readings = [f"{value:.3f}" for value in values[index, reported]]
            tail = ',"unit":"kWh"}'
        lines.extend(
            f'{head}{texts[hour]}","reading":{reading}{tail}' for hour, reading in zip(reported, readings, strict=True)
        )
        days.extend((reported // 24).tolist())
    valid_hours = len(lines)

    # Re-sends: exact copies (a third of them land in the next day's file) and conflicting copies.
    chosen = rng.permutation(valid_hours)
    duplicates = chosen[: int(spec.duplicate_rate * valid_hours)]
    conflicts = chosen[len(duplicates) : len(duplicates) + int(spec.conflict_rate * valid_hours)]
    extra_lines = [lines[i] for i in duplicates]
    extra_days = [min(days[i] + int(rng.random() < 1 / 3), spec.days - 1) for i in duplicates]
    for i in conflicts:
        record = json.loads(lines[i])
        record["reading"] = round(record["reading"] * float(rng.uniform(1.05, 1.3)) + 0.01, 3)
        extra_lines.append(json.dumps(record, separators=(",", ":")))
        extra_days.append(days[i])

    malformed: Counter[str] = Counter()
    if spec.malformed_rate > 0:
        per_kind = max(1, round(spec.malformed_rate * valid_hours / len(MALFORMED_KINDS)))
        for kind in MALFORMED_KINDS:
            for _ in range(per_kind):
                hour = int(rng.integers(0, length))
                extra_lines.append(
                    _malformed_line(kind, customers[int(rng.integers(0, spec.customers))], utc_texts[hour], rng)
                )
                extra_days.append(hour // 24)
                malformed[kind] += 1

    all_lines = np.array(lines + extra_lines, dtype=object)
    all_days = np.array(days + extra_days)
    files = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for day in range(spec.days):
        chunk = all_lines[all_days == day]
        if len(chunk) == 0:
            continue
        chunk = chunk[rng.permutation(len(chunk))]  # arrival order, not time order
        date = hours[day * 24]
        path = out_dir / f"{date:%Y/%m/%d}" / f"readings-{date:%Y%m%d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(chunk) + "\n"
        if spec.gzip:
            path = path.with_suffix(".jsonl.gz")
            path.write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            path.write_text(text)
        files.append(str(path.relative_to(out_dir)))

    return GeneratedDataset(
        files=files,
        customers=spec.customers,
        hours_per_customer=length,
        lines=len(all_lines),
        valid_hours=valid_hours,
        duplicates=len(duplicates),
        conflicting_hours=len(conflicts),
        malformed=dict(malformed),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.datagen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the JSON lines files into")
    parser.add_argument("--customers", type=int, default=DatasetSpec.customers)
    parser.add_argument("--days", type=int, default=DatasetSpec.days)
    parser.add_argument("--start", default=DatasetSpec.start, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=DatasetSpec.seed)
    parser.add_argument("--malformed-rate", type=float, default=DatasetSpec.malformed_rate)
    parser.add_argument("--duplicate-rate", type=float, default=DatasetSpec.duplicate_rate)
    parser.add_argument("--gzip", action="store_true", help="write .jsonl.gz files")
    args = parser.parse_args(argv)
    try:
        spec = DatasetSpec(
            customers=args.customers,
            days=args.days,
            start=args.start,
            seed=args.seed,
            malformed_rate=args.malformed_rate,
            duplicate_rate=args.duplicate_rate,
            gzip=args.gzip,
        )
    except ValueError as error:
        parser.error(str(error))
    print(generate(spec, args.out).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
