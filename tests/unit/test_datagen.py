"""The synthetic data set is reproducible, realistic enough to forecast, and its summary is truthful."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines import datagen


def read_lines(root, generated) -> list[str]:
    return [text for name in generated.files for text in (root / name).read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    spec = datagen.DatasetSpec(customers=5, days=3)
    first = datagen.generate(spec, tmp_path / "a")
    again = datagen.generate(spec, tmp_path / "b")
    other = datagen.generate(datagen.DatasetSpec(customers=5, days=3, seed=8), tmp_path / "c")
    assert read_lines(tmp_path / "a", first) == read_lines(tmp_path / "b", again)
    assert read_lines(tmp_path / "a", first) != read_lines(tmp_path / "c", other)


def test_one_file_per_day_and_the_summary_counts_every_line(tmp_path):
    spec = datagen.DatasetSpec(customers=20, days=7, malformed_rate=0.01)
    generated = datagen.generate(spec, tmp_path)
    assert generated.files[0] == "2026/01/05/readings-20260105.jsonl"
    assert len(generated.files) == 7
    lines = read_lines(tmp_path, generated)
    assert len(lines) == generated.lines
    assert generated.lines == generated.valid_hours + generated.duplicates + generated.conflicting_hours + sum(
        generated.malformed.values()
    )
    assert set(generated.malformed) == set(datagen.MALFORMED_KINDS)
    summary = json.loads(generated.to_json())
    assert summary["expected_rows"] == generated.valid_hours - generated.conflicting_hours


def test_readings_have_daily_seasonality_and_gaps(tmp_path):
    spec = datagen.DatasetSpec(customers=10, days=28, malformed_rate=0, duplicate_rate=0, conflict_rate=0)
    generated = datagen.generate(spec, tmp_path)
    records = [json.loads(text) for text in read_lines(tmp_path, generated)]
    per_customer = {}
    for record in records:
        if record["unit"] == "kWh" and record["timestamp"].endswith(":00:00Z"):
            per_customer.setdefault(record["customer_id"], []).append(record)
    assert generated.valid_hours < spec.customers * spec.days * 24  # outages and late starts
    correlations = []
    for rows in per_customer.values():
        hours = np.array([int(r["timestamp"][11:13]) for r in rows])
        values = np.array([r["reading"] for r in rows])
        profile = np.array([values[hours == h].mean() for h in range(24)])
        assert profile.max() > 1.3 * profile.min()  # a visible daily cycle
        correlations.append(np.corrcoef(profile[hours], values)[0, 1])
    assert np.median(correlations) > 0.5  # the hour of day explains much of the variance


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"customers": 0}, "at least one customer"), ({"duplicate_rate": 1.5}, "duplicate_rate must be in")],
)
def test_bad_specs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        datagen.DatasetSpec(**changes)


def test_cli_prints_the_summary(tmp_path, capsys):
    assert datagen.main(["--out", str(tmp_path), "--customers", "2", "--days", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["customers"] == 2
    with pytest.raises(SystemExit):
        datagen.main(["--out", str(tmp_path), "--customers", "0"])
