"""The prep transformation: every malformed kind ends in quarantine with its reason, duplicates are resolved
the same way whatever the batching, and nothing is lost (read = written + duplicates + quarantined)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.steps import cleaning

GOOD = {"customer_id": "cust-1", "device_id": "m", "timestamp": "2026-01-05T13:00:00Z", "reading": 1.5, "unit": "kWh"}


def line(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        ('{"customer_id": "cust-1", ', cleaning.INVALID_JSON, "Expecting"),
        ("[1, 2]", cleaning.NOT_AN_OBJECT, "list"),
        ('"just text"', cleaning.NOT_AN_OBJECT, "str"),
        (line(reading=...), cleaning.MISSING_FIELD, "reading"),
        (line(customer_id=None, timestamp=...), cleaning.MISSING_FIELD, "customer_id, timestamp"),
        (line(customer_id="Cust 1"), cleaning.INVALID_CUSTOMER_ID, "'Cust 1'"),
        (line(customer_id=42), cleaning.INVALID_CUSTOMER_ID, "42"),
        (line(timestamp="2026-01-05T13:00:00"), cleaning.INVALID_TIMESTAMP, "UTC offset"),
        (line(timestamp=1767618000), cleaning.INVALID_TIMESTAMP, "1767618000"),
        (line(timestamp="2026-02-30T13:00:00Z"), cleaning.INVALID_TIMESTAMP, "not ISO 8601"),
        (line(timestamp="yesterday Z"), cleaning.INVALID_TIMESTAMP, "not ISO 8601"),
        (line(timestamp="1970-01-01T00:00:00Z"), cleaning.TIMESTAMP_OUT_OF_RANGE, "2000..2100"),
        (line(reading="1.5"), cleaning.INVALID_READING, "'1.5'"),
        (line(reading=True), cleaning.INVALID_READING, "True"),
        (line(reading=[1.5]), cleaning.INVALID_READING, "[1.5]"),
        (line().replace("1.5", "NaN"), cleaning.INVALID_READING, "nan"),
        (line().replace("1.5", "Infinity"), cleaning.INVALID_READING, "inf"),
        (line(unit="MJ"), cleaning.UNKNOWN_UNIT, "'MJ'"),
        (line(unit=None), cleaning.UNKNOWN_UNIT, "None"),
    ],
)
def test_each_malformed_kind_is_quarantined_with_its_reason(text, reason, detail):
    tagged = cleaning.parse_lines(["", text, line()], "day.jsonl")
    assert len(cleaning.valid_rows(tagged)) == 1
    [record] = cleaning.quarantine_records(tagged)
    assert record["reason"] == reason
    assert detail in record["detail"]
    assert record["raw"] == text
    assert record["source"] == "day.jsonl:2"  # blank line 1 still counts for line numbers


def test_valid_records_are_typed_floored_to_the_hour_in_utc_and_in_kwh():
    tagged = cleaning.parse_lines(
        [
            line(timestamp="2026-01-05T13:42:10Z"),
            line(timestamp="2026-01-05T15:00:00+01:00", reading=2500, unit="Wh"),
            line(timestamp="2026-01-05T10:30:00-05:00", reading=3),  # no unit: kWh
        ],
        "f",
    )
    rows = cleaning.valid_rows(tagged)
    assert str(rows["timestamp"].dtype) == cleaning.TIMESTAMP_DTYPE
    assert rows["timestamp"].dt.strftime("%H:%M").tolist() == ["13:00", "14:00", "15:00"]
    assert rows["reading"].tolist() == [1.5, 2.5, 3.0]
    assert rows["raw"].isna().all()
    assert rows["source"].isna().all()


def test_exact_duplicates_are_removed_and_conflicts_are_quarantined_whole():
    lines = [
        line(),
        line(timestamp="2026-01-05T14:00:00+01:00"),  # the same hour and reading, another encoding
        line(reading=1500, unit="Wh"),  # again the same reading
        line(customer_id="cust-2", reading=2.0),
        line(customer_id="cust-2", reading=2.5),
        line(customer_id="cust-2", timestamp="2026-01-05T14:00:00Z", reading=7.0),
    ]
    resolved = cleaning.deduplicate(cleaning.valid_rows(cleaning.parse_lines(lines, "f")))
    assert resolved["reason"].fillna("written").value_counts().to_dict() == {
        "written": 2,
        cleaning.DUPLICATE: 2,
        cleaning.CONFLICTING_DUPLICATE: 2,
    }
    kept = cleaning.valid_rows(resolved)
    assert list(zip(kept["customer"], kept["reading"], strict=True)) == [("cust-1", 1.5), ("cust-2", 7.0)]
    conflicts = cleaning.quarantine_records(resolved)
    assert [json.loads(c["raw"])["reading_kwh"] for c in conflicts] == [2.0, 2.5]
    assert all(c["detail"] == "2 different readings for this hour, from 2 to 2.5" for c in conflicts)


def test_results_do_not_depend_on_batching_or_order():
    lines = [
        line(customer_id=f"cust-{i % 3}", timestamp=f"2026-01-05T{i % 5:02d}:00:00Z", reading=i % 4) for i in range(60)
    ]
    lines += ["garbage", line(unit="MJ")]
    whole = cleaning.deduplicate(cleaning.valid_rows(cleaning.parse_lines(lines, "f")))
    # Spark-like: random batches, reversed order, grouped per customer.
    batches = [
        cleaning.parse_lines(lines[::-1][i : i + 7], ["s"] * len(lines[::-1][i : i + 7])) for i in range(0, 62, 7)
    ]
    valid = pd.concat([cleaning.valid_rows(b) for b in batches], ignore_index=True)
    per_customer = pd.concat([cleaning.deduplicate(g) for _, g in valid.groupby("customer")], ignore_index=True)
    columns = ["customer", "timestamp", "reading", "reason"]
    assert whole[columns].fillna("-").equals(per_customer[columns].fillna("-"))
    assert sum(len(cleaning.quarantined_rows(b)) for b in batches) == 2


def test_report_balances_and_rejects_lost_records():
    tagged = cleaning.parse_lines([line(), line(), "bad"], "f")
    report = cleaning.PrepReport(engine="processing", records_read=3)
    report.add(cleaning.quarantined_rows(tagged))
    report.add(cleaning.deduplicate(cleaning.valid_rows(tagged)))
    report.check_balance()
    document = json.loads(report.to_json())
    assert document["rows_written"] == 1
    assert document["duplicates_removed"] == 1
    assert document["quarantined"] == {cleaning.INVALID_JSON: 1}
    assert document["quarantined_total"] == 1
    report.records_read = 4
    with pytest.raises(AssertionError, match="lost records"):
        report.check_balance()


def test_empty_input_gives_empty_frames_with_the_tagged_layout():
    tagged = cleaning.parse_lines(["", "  "], "f")
    assert tagged.empty
    assert list(tagged.columns) == list(cleaning.TAGGED_COLUMNS)
    assert cleaning.deduplicate(cleaning.valid_rows(tagged)).empty
    assert cleaning.count_blank(["", "  ", "x"]) == 2
