"""Prep on a generated data set: every record is accounted for, malformed ones are in quarantine with their
count, both engines' code paths agree, and bad input fails with a message that says what is wrong."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from pipelines import datagen
from pipelines.glue import prep_job
from pipelines.steps import cleaning, prep
from pipelines.steps.paths import OPT_ML_ENV, PREP_RAW, PrepPaths, StepInputError

SPEC = datagen.DatasetSpec(customers=30, days=21, seed=11, malformed_rate=0.01, conflict_rate=0.002)


def prep_paths(base: Path) -> PrepPaths:
    return PrepPaths.from_environ({OPT_ML_ENV: str(base)})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("opt_ml")
    paths = prep_paths(base)
    generated = datagen.generate(SPEC, paths.raw)
    report = prep.run(paths, workers=1)
    return generated, report, paths


def curated_frame(curated: Path) -> pd.DataFrame:
    table = ds.dataset(curated, format="parquet", partitioning="hive").to_table()
    return table.to_pandas().sort_values(["customer", "timestamp"]).reset_index(drop=True)


def test_every_record_is_written_removed_as_duplicate_or_quarantined(prepared):
    generated, report, paths = prepared
    assert report.records_read == generated.lines
    assert report.rows_written == generated.expected_rows
    assert report.duplicates_removed == generated.duplicates
    assert report.quarantined == generated.expected_quarantine()
    assert set(report.quarantined) >= set(datagen.MALFORMED_KINDS.values())  # every kind was exercised
    on_disk = json.loads((paths.report / "prep_report.json").read_text())
    assert on_disk["quarantined_total"] == sum(generated.expected_quarantine().values())
    assert (
        on_disk["records_read"]
        == on_disk["rows_written"] + on_disk["duplicates_removed"] + on_disk["quarantined_total"]
    )


def test_quarantine_lines_carry_reason_source_and_raw_text(prepared):
    generated, _, paths = prepared
    records = [json.loads(text) for text in (paths.quarantine / "quarantine.jsonl").read_text().splitlines()]
    assert Counter(r["reason"] for r in records) == Counter(generated.expected_quarantine())
    malformed = [r for r in records if r["reason"] != cleaning.CONFLICTING_DUPLICATE]
    raw_lines = {
        f"{name}:{number}": text
        for name in generated.files
        for number, text in enumerate((paths.raw / name).read_text().splitlines(), start=1)
    }
    assert all(raw_lines[r["source"]] == r["raw"] for r in malformed)  # points at the exact input line


def test_curated_parquet_is_one_sorted_file_per_customer_without_duplicate_hours(prepared):
    _, report, paths = prepared
    partitions = sorted(paths.curated.iterdir())
    assert [p.name for p in partitions] == [f"customer={c}" for c in datagen.customer_ids(SPEC.customers)]
    assert all(len(list(p.iterdir())) == 1 for p in partitions)
    frame = curated_frame(paths.curated)
    assert len(frame) == report.rows_written
    assert not frame.duplicated(["customer", "timestamp"]).any()
    assert (frame["timestamp"].dt.minute == 0).all()
    assert str(frame["timestamp"].dt.tz) == "UTC"
    # Wh meters were converted: no customer's readings are a thousand times its neighbours'.
    assert frame.groupby("customer")["reading"].median().max() < 1_000


def test_glue_engine_adapters_produce_the_same_rows_and_report(prepared):
    """Simulates Spark's plan with pandas: random batches -> parse_batches, groupBy(customer) -> deduplicate."""
    generated, report, paths = prepared
    lines = []
    for name in generated.files:
        lines += [(text, name) for text in (paths.raw / name).read_text().splitlines()]
    records = pd.DataFrame(lines, columns=["value", "source"])
    blank = records["value"].str.strip() == ""
    batches = [records[~blank].iloc[i : i + 997] for i in range(0, int((~blank).sum()), 997)]
    tagged = pd.concat(prep_job.parse_batches(iter(batches)), ignore_index=True)
    valid = cleaning.valid_rows(tagged)
    resolved = pd.concat([prep_job.deduplicate_customer(g) for _, g in valid.groupby("customer")], ignore_index=True)
    final = pd.concat([cleaning.quarantined_rows(tagged), resolved], ignore_index=True)
    reasons = {None if pd.isna(k) else k: v for k, v in final["reason"].value_counts(dropna=False).items()}
    written = cleaning.valid_rows(final)
    glue_report = prep_job.build_report(
        input_files=len(generated.files),
        records_read=len(final),
        blank_lines=int(blank.sum()),
        reasons=reasons,
        customers=written["customer"].nunique(),
    )
    assert glue_report.quarantined == report.quarantined
    assert (glue_report.rows_written, glue_report.duplicates_removed) == (
        report.rows_written,
        report.duplicates_removed,
    )
    expected = curated_frame(paths.curated)[["customer", "timestamp", "reading"]]
    actual = written.sort_values(["customer", "timestamp"])[["customer", "timestamp", "reading"]]
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), expected, check_dtype=False, check_categorical=False)


def test_gzip_input_and_a_rerun_replace_earlier_output(tmp_path):
    paths = prep_paths(tmp_path)
    generated = datagen.generate(datagen.DatasetSpec(customers=3, days=2, gzip=True), paths.raw)
    assert all(name.endswith(".jsonl.gz") for name in generated.files)
    (paths.curated / "customer=stale").mkdir(parents=True)
    report = prep.run(paths, workers=1)
    assert report.rows_written == generated.expected_rows
    assert sorted(p.name for p in paths.curated.iterdir()) == [f"customer={c}" for c in datagen.customer_ids(3)]


def test_parallel_parsing_gives_the_same_report(tmp_path):
    paths = prep_paths(tmp_path)
    generated = datagen.generate(datagen.DatasetSpec(customers=4, days=3, malformed_rate=0.05), paths.raw)
    report = prep.run(paths, workers=2)
    assert report.quarantined == generated.expected_quarantine()
    assert report.rows_written == generated.expected_rows


def test_missing_input_fails_clearly_and_tells_sagemaker(tmp_path):
    environ = {OPT_ML_ENV: str(tmp_path)}
    assert prep.main(["--workers", "1"], environ) == 1
    message = (tmp_path / "output" / "message").read_text()
    assert "raw input" in message
    assert f"/opt/ml/{PREP_RAW}" in message
    assert not (tmp_path / "processing" / "output").exists()  # nothing written


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "holds no files"),
        ({"_SUCCESS": "", ".hidden": "x"}, "holds no files"),
        ({"a.jsonl": "", "b.jsonl": "\n\n  \n"}, "holds 2 file(s) but no records"),
        ({"a.jsonl": "garbage\n[1]\n"}, "none of the 2 records is valid (invalid_json: 1, not_an_object: 1)"),
    ],
)
def test_empty_or_useless_input_fails_with_a_clear_message(tmp_path, files, message):
    paths = prep_paths(tmp_path)
    paths.raw.mkdir(parents=True)
    for name, text in files.items():
        (paths.raw / name).write_text(text)
    with pytest.raises(StepInputError) as caught:
        prep.run(paths, workers=1)
    assert message in str(caught.value)


def test_all_malformed_input_still_leaves_the_quarantine_to_read(tmp_path):
    paths = prep_paths(tmp_path)
    paths.raw.mkdir(parents=True)
    (paths.raw / "a.jsonl.gz").write_bytes(gzip.compress(b'{"customer_id": "x"}\n'))
    with pytest.raises(StepInputError, match="missing_field: 1"):
        prep.run(paths, workers=1)
    [record] = (paths.quarantine / "quarantine.jsonl").read_text().splitlines()
    assert json.loads(record)["source"] == "a.jsonl.gz:1"
    assert json.loads((paths.report / "prep_report.json").read_text())["quarantined_total"] == 1


def test_glue_job_arguments_are_checked():
    argv = ["--JOB_NAME", "j", "--input_uri", "s3://raw/in/", "--curated_uri", "s3://c/out/"]
    argv += ["--quarantine_uri", "s3://c/q/", "--report_uri", "s3://c/r/prep_report.json"]
    assert prep_job.parse_arguments(argv)["curated_uri"] == "s3://c/out/"
    with pytest.raises(prep_job.GlueJobError, match="--input_uri must be an s3:// URI"):
        prep_job.parse_arguments([*argv, "--input_uri", "/local/path"])
    with pytest.raises(prep_job.GlueJobError, match="report object"):
        prep_job.parse_arguments([*argv, "--report_uri", "s3://c/r/"])
    with pytest.raises(SystemExit):
        prep_job.parse_arguments(argv[:4])


def test_many_shards_and_small_chunks_give_the_same_output(prepared, tmp_path):
    """Bounded memory: files read in chunks of 97 lines and customers spread over 8 de-duplication shards give
    the curated rows, the report and the quarantine (each source pointing at its exact line) of one pass."""
    _, report, paths = prepared
    small = prep_paths(tmp_path)
    datagen.generate(SPEC, small.raw)
    raw_mb = sum(prep.raw_size(path) for path in prep.input_files(small.raw)) / 1e6
    assert prep.shard_count(prep.input_files(small.raw), raw_mb / 8) == 8
    sharded = prep.run(small, workers=1, shard_mb=raw_mb / 8, chunk_lines=97)
    assert sharded == report
    pd.testing.assert_frame_equal(curated_frame(small.curated), curated_frame(paths.curated))

    def quarantine(p):
        return sorted((p.quarantine / "quarantine.jsonl").read_text().splitlines())

    assert quarantine(small) == quarantine(paths)
    assert not (small.curated.parent / prep.SPILL).exists()  # the spill is removed, never uploaded


def test_a_shard_size_that_is_not_positive_is_refused_before_anything_is_written(tmp_path):
    paths = prep_paths(tmp_path)
    datagen.generate(datagen.DatasetSpec(customers=2, days=1), paths.raw)
    with pytest.raises(StepInputError, match="--shard-mb must be positive"):
        prep.run(paths, workers=1, shard_mb=0)
    assert not (tmp_path / "processing" / "output").exists()
