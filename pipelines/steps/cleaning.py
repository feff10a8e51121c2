"""THE prep transformation, shared by both prep engines (SageMaker Processing: prep.py; AWS Glue: glue/prep_job.py).

Raw input: JSON lines, one meter reading per line, e.g.
    {"customer_id": "cust-00001", "device_id": "meter-1", "timestamp": "2026-01-05T13:00:00Z",
     "reading": 1.234, "unit": "kWh"}
Output rows: customer (str), timestamp (UTC, floored to the hour the reading belongs to), reading (float64, kWh).

Rules, in order; a record that breaks one is quarantined with that reason (and a detail), never dropped:
- the line is JSON (`invalid_json`) and an object (`not_an_object`);
- customer_id, timestamp and reading are present (`missing_field`);
- customer_id is a valid model id, modelgate.model_repository.CUSTOMER_ID (`invalid_customer_id`): it names the
  customer's model archive, so it is not silently lower-cased or rewritten;
- timestamp is ISO 8601 with a UTC offset (`invalid_timestamp`) within 2000..2100 (`timestamp_out_of_range`:
  a meter whose clock was reset reports 1970 and would stretch its series over decades);
- reading is a finite JSON number (`invalid_reading`; numeric strings and booleans are not numbers);
- unit, when present, is kWh or Wh (`unknown_unit`); Wh readings are converted to kWh.
Then, per customer and hour: identical readings are one reading sent more than once (the extra copies are
counted as `duplicate` and not written anywhere); different readings for the same hour cannot be told apart, so
all of them are quarantined as `conflicting_duplicate` and the hour becomes a gap.

Everything here is a function of pandas frames in the "tagged" layout (TAGGED_COLUMNS: a row is valid when its
`reason` is null), so that Spark can run it batch by batch (mapInPandas) and customer by customer
(groupBy().applyInPandas): the same code, the same results, in both engines. Written for pandas >= 1.5 (AWS
Glue 4.0 ships 1.5; 5.0 ships 2.x).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from modelgate.model_repository import CUSTOMER_ID

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_CUSTOMER_ID = "invalid_customer_id"
INVALID_TIMESTAMP = "invalid_timestamp"
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
INVALID_READING = "invalid_reading"
UNKNOWN_UNIT = "unknown_unit"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
QUARANTINE_REASONS = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    INVALID_CUSTOMER_ID,
    INVALID_TIMESTAMP,
    TIMESTAMP_OUT_OF_RANGE,
    INVALID_READING,
    UNKNOWN_UNIT,
    CONFLICTING_DUPLICATE,
)
DUPLICATE = "duplicate"  # an extra copy of a valid reading: counted, not quarantined

REQUIRED_FIELDS = ("customer_id", "timestamp", "reading")
UNITS = {"kWh": 1.0, "Wh": 0.001}  # -> kWh
EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")
LATEST = pd.Timestamp("2100-01-01", tz="UTC")
_OFFSET_RE = re.compile(r"(?:Z|z|[+-]\d\d:?\d\d)$")

# Microseconds: what Spark and every Parquet reader understand. pandas < 2 (AWS Glue 4.0) only has nanoseconds,
# and parses ISO 8601 without being told the format.
_PANDAS_2 = int(pd.__version__.split(".")[0]) >= 2
TIMESTAMP_DTYPE = "datetime64[us, UTC]" if _PANDAS_2 else "datetime64[ns, UTC]"
_ISO_FORMAT = {"format": "ISO8601"} if _PANDAS_2 else {}
_HOUR = pd.tseries.offsets.Hour()
TAGGED_COLUMNS = ("customer", "timestamp", "reading", "reason", "detail", "raw", "source")
# The same layout as a Spark DDL schema, for mapInPandas/applyInPandas.
TAGGED_SPARK_SCHEMA = (
    "customer string, timestamp timestamp, reading double, reason string, detail string, raw string, source string"
)
CURATED_COLUMNS = ("timestamp", "reading")  # per customer partition (customer=<id>/), sorted by timestamp


def _tagged(columns: Mapping[str, Sequence | np.ndarray | pd.Series]) -> pd.DataFrame:
    """A frame in the tagged layout from some of its columns (the others are null)."""
    length = len(next(iter(columns.values()))) if columns else 0

    def column(name: str):
        values = columns.get(name)
        if values is None:
            return np.full(length, None, dtype=object)
        return values.array if isinstance(values, pd.Series) else values

    frame = pd.DataFrame({name: column(name) for name in TAGGED_COLUMNS})
    for name in ("customer", "reason", "detail", "raw", "source"):
        frame[name] = frame[name].astype(object)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype(TIMESTAMP_DTYPE)
    frame["reading"] = frame["reading"].astype("float64")
    return frame


def empty_tagged() -> pd.DataFrame:
    return _tagged({})


def valid_frame(customer, timestamp, reading) -> pd.DataFrame:
    """Valid rows (customer, UTC hour, kWh) in the tagged layout, e.g. read back from a spill file."""
    return _tagged({"customer": customer, "timestamp": timestamp, "reading": reading})


def parse_lines(lines: Iterable[str], source: str | Iterable[str], first_line: int = 1) -> pd.DataFrame:
    """Parse and validate raw lines, record by record (no state across lines: any batching gives the same
    rows). Blank lines are skipped (count them with `count_blank`). `source` is either a file name, and a
    quarantined row's source is then `<file>:<line number>`, or one source per line (Spark's file names).
    Valid rows carry neither their text nor their source, to keep millions of them small. `first_line` is the
    number of the first line (a file read in chunks)."""
    per_line = not isinstance(source, str)
    sources = iter(source) if per_line else itertools.repeat(source)
    customer_id, has_offset = CUSTOMER_ID.match, _OFFSET_RE.search
    rows = []  # (customer, timestamp text, reading in kWh, line, source, line number): passed the field checks
    rejected = []  # (reason, detail, line, source)
    for number, (line, where) in enumerate(zip(lines, sources, strict=per_line), start=first_line):
        if not line or line.isspace():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            rejected.append((INVALID_JSON, str(error), line, where if per_line else f"{where}:{number}"))
            continue
        problem = _field_problem(record, customer_id, has_offset)
        if problem:
            rejected.append((*problem, line, where if per_line else f"{where}:{number}"))
        else:
            reading = record["reading"] * UNITS[record.get("unit", "kWh")]
            rows.append((record["customer_id"], record["timestamp"], reading, line, where, number))
    return _assemble(rows, rejected, per_line)


def _field_problem(record, customer_id, has_offset) -> tuple[str, str] | None:
    if not isinstance(record, dict):
        return NOT_AN_OBJECT, f"a JSON {type(record).__name__}, expected an object"
    missing = [name for name in REQUIRED_FIELDS if record.get(name) is None]
    if missing:
        return MISSING_FIELD, ", ".join(missing)
    customer, stamp, reading = record["customer_id"], record["timestamp"], record["reading"]
    unit = record.get("unit", "kWh")
    if not isinstance(customer, str) or not customer_id(customer):
        return INVALID_CUSTOMER_ID, f"customer_id {customer!r:.80} is not a valid model id"
    if not isinstance(stamp, str) or not has_offset(stamp):
        return INVALID_TIMESTAMP, f"timestamp {stamp!r:.40} is not ISO 8601 with a UTC offset (Z, +01:00)"
    if isinstance(reading, bool) or not isinstance(reading, int | float) or not math.isfinite(reading):
        return INVALID_READING, f"reading {reading!r:.40} is not a finite number"
    if not isinstance(unit, str) or unit not in UNITS:
        return UNKNOWN_UNIT, f"unit {unit!r:.40}, expected one of {', '.join(UNITS)}"
    return None


def _assemble(rows: list[tuple], rejected: list[tuple], per_line: bool) -> pd.DataFrame:
    """The tagged frame; timestamps are parsed here, vectorised (per row they would dominate the cost)."""
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(6)]
    customers, stamps, readings, lines, wheres, numbers = columns
    parsed = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, errors="coerce", **_ISO_FORMAT)
    unparsable = parsed.isna().to_numpy()
    out_of_range = ~unparsable & ((parsed < EARLIEST) | (parsed >= LATEST)).to_numpy()
    for index in np.flatnonzero(unparsable | out_of_range):
        if unparsable[index]:
            reason, detail = INVALID_TIMESTAMP, f"timestamp {stamps[index]!r:.40} is not ISO 8601"
        else:
            reason, detail = TIMESTAMP_OUT_OF_RANGE, f"timestamp {stamps[index]!r:.40} is outside 2000..2100"
        origin = wheres[index] if per_line else f"{wheres[index]}:{numbers[index]}"
        rejected.append((reason, detail, lines[index], origin))
    good = ~(unparsable | out_of_range)
    valid = _tagged(
        {
            "customer": np.asarray(customers, dtype=object)[good],
            "timestamp": parsed[good].dt.floor(_HOUR),
            "reading": np.asarray(readings, dtype="float64")[good],
        }
    )
    if not rejected:
        return valid
    reasons, details, raws, origins = (list(column) for column in zip(*rejected, strict=True))
    bad = _tagged({"reason": reasons, "detail": details, "raw": raws, "source": origins})
    return pd.concat([valid, bad], ignore_index=True) if not valid.empty else bad


def count_blank(lines: Iterable[str]) -> int:
    return sum(1 for line in lines if not line or line.isspace())


def deduplicate(valid: pd.DataFrame) -> pd.DataFrame:
    """Resolve repeated (customer, hour) readings among valid rows (any number of customers). Returns the
    tagged rows sorted by customer and time: one valid row per hour, extra identical copies tagged `duplicate`,
    and every copy of an hour with differing readings tagged `conflicting_duplicate` (readings in `detail`)."""
    if valid.empty:
        return empty_tagged()
    key = ["customer", "timestamp"]
    frame = valid.sort_values([*key, "reading"], kind="stable").reset_index(drop=True)
    repeated_key = frame.duplicated(key, keep=False)
    if repeated_key.any():  # only the few repeated hours go through the (slower) groupby
        repeated = frame[repeated_key]
        group = repeated.groupby(key, sort=False)["reading"]
        high, low = group.transform("max"), group.transform("min")
        scale = np.maximum(high.abs(), low.abs()).clip(lower=1.0)
        conflicting = pd.Series(False, index=frame.index)
        conflicting[repeated.index] = (high - low) > 1e-9 * scale
        extra_copy = frame.duplicated(key, keep="first") & ~conflicting
        frame.loc[extra_copy, "reason"] = DUPLICATE
        if conflicting.any():  # vectorised: a broken feed can make every hour a conflict
            clashing = frame[conflicting]
            copies = clashing.groupby(key, sort=False)["reading"].transform("size").astype(str)
            lowest, highest = low[clashing.index].map("{:g}".format), high[clashing.index].map("{:g}".format)
            frame.loc[conflicting, "reason"] = CONFLICTING_DUPLICATE
            frame.loc[conflicting, "detail"] = (
                copies + " different readings for this hour, from " + lowest + " to " + highest
            )
            frame.loc[conflicting, "raw"] = (
                '{"customer_id": "'
                + clashing["customer"].astype(str)
                + '", "timestamp": "'
                + clashing["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
                + '", "reading_kwh": '
                + clashing["reading"].map(repr)
                + "}"
            )  # valid rows drop their text to save memory: a quarantined conflict shows its parsed content
    return _tagged({name: frame[name] for name in TAGGED_COLUMNS})


def valid_rows(tagged: pd.DataFrame) -> pd.DataFrame:
    return tagged[tagged["reason"].isna()]


def quarantined_rows(tagged: pd.DataFrame) -> pd.DataFrame:
    return tagged[tagged["reason"].isin(QUARANTINE_REASONS)]


def quarantine_records(tagged: pd.DataFrame) -> list[dict]:
    """Quarantined rows as JSON-ready dicts, the quarantine prefix's format (one JSON object per line)."""
    rows = quarantined_rows(tagged)
    return [
        {"reason": r, "detail": d, "source": s, "raw": raw}
        for r, d, s, raw in zip(rows["reason"], rows["detail"], rows["source"], rows["raw"], strict=True)
    ]


@dataclass
class PrepReport:
    """prep_report.json: what went in and where every record went (records_read = written + duplicates +
    quarantined)."""

    engine: str
    input_files: int = 0
    records_read: int = 0
    blank_lines: int = 0
    rows_written: int = 0
    duplicates_removed: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    customers: int = 0

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def add(self, tagged: pd.DataFrame) -> None:
        """Count a batch of final tagged rows (after deduplication)."""
        counts = Counter(tagged["reason"].dropna())
        self.duplicates_removed += counts.pop(DUPLICATE, 0)
        for reason, count in counts.items():
            self.quarantined[reason] = self.quarantined.get(reason, 0) + count
        self.rows_written += int(tagged["reason"].isna().sum())

    def merge(self, other: PrepReport) -> None:
        """Add another part's counts (a file's or a shard's)."""
        self.records_read += other.records_read
        self.blank_lines += other.blank_lines
        self.rows_written += other.rows_written
        self.duplicates_removed += other.duplicates_removed
        self.customers += other.customers
        for reason, count in other.quarantined.items():
            self.quarantined[reason] = self.quarantined.get(reason, 0) + count

    def check_balance(self) -> None:
        accounted = self.rows_written + self.duplicates_removed + self.quarantined_total
        if accounted != self.records_read:
            raise AssertionError(f"prep lost records: read {self.records_read}, accounted for {accounted}")

    def to_json(self) -> str:
        document = {"schema": 1, **asdict(self), "quarantined_total": self.quarantined_total}
        document["quarantined"] = dict(sorted(self.quarantined.items()))
        return json.dumps(document, indent=1, sort_keys=True)
