"""Prep step, AWS Glue engine (PySpark): the same transformation as pipelines/steps/prep.py, at Spark scale.

Both engines call pipelines/steps/cleaning.py; Spark only distributes it:
    spark.read.text(raw)                          one row per line (+ its file name); .gz is decompressed
      .mapInPandas(parse_batches)                 per-record checks, batch by batch (stateless)
      valid rows .groupBy(customer)
                 .applyInPandas(deduplicate)      duplicates need all of one customer's rows together
    -> curated/customer=<id>/part-*.parquet       repartitioned by customer: one file per customer, so that
                                                  training can shard customers by S3 key
    -> quarantine/part-*.json                     JSON lines: reason, detail, source, raw
    -> report (one S3 object)                     prep_report.json, cleaning.PrepReport with engine "glue"

Job arguments (Glue passes `--name value`; its own arguments such as --JOB_NAME are ignored):
    --input_uri s3://raw/...  --curated_uri s3://curated/...  --quarantine_uri s3://...  --report_uri s3://.../prep_report.json
Glue runtime: Glue 4.0 or 5.0 (pandas and pyarrow ship with both). The job's `--extra-py-files` must hold a zip
of GLUE_SOURCES (below) at its root, so that `pipelines.steps.cleaning` and `modelgate.model_repository` import.

Only `main()` and `run()` touch Spark (imported lazily), so the pandas adapters are unit-tested without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from urllib.parse import urlparse

import pandas as pd

from pipelines.steps import cleaning

GLUE_SOURCES: tuple[str, ...] = (
    "pipelines/__init__.py",
    "pipelines/steps/__init__.py",
    "pipelines/steps/cleaning.py",
    "modelgate/__init__.py",
    "modelgate/model_repository.py",
)
ARGUMENTS = ("input_uri", "curated_uri", "quarantine_uri", "report_uri")


class GlueJobError(RuntimeError):
    pass


def parse_arguments(argv: list[str]) -> dict[str, str]:
    parser = argparse.ArgumentParser(prog="prep_job.py", add_help=False)
    for name in ARGUMENTS:
        parser.add_argument(f"--{name}", required=True)
    args, _ = parser.parse_known_args(argv)  # Glue adds --JOB_NAME, --job-bookmark-option, ...
    values = vars(args)
    for name in ARGUMENTS:
        if urlparse(values[name]).scheme != "s3":
            raise GlueJobError(f"--{name} must be an s3:// URI, got {values[name]!r}")
    if not values["report_uri"].endswith(".json"):
        raise GlueJobError(
            f"--report_uri must name the report object (…/prep_report.json), got {values['report_uri']!r}"
        )
    return values


def parse_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas: batches of (value, source) text rows -> tagged rows (cleaning.TAGGED_SPARK_SCHEMA)."""
    for batch in batches:
        lines = batch["value"].tolist()
        yield cleaning.parse_lines(lines, batch["source"].tolist())


def deduplicate_customer(rows: pd.DataFrame) -> pd.DataFrame:
    """applyInPandas over valid rows grouped by customer."""
    return cleaning.deduplicate(rows)


def build_report(
    *, input_files: int, records_read: int, blank_lines: int, reasons: Mapping[str | None, int], customers: int
) -> cleaning.PrepReport:
    """The report from Spark's `groupBy(reason).count()` of the final rows (None = written)."""
    report = cleaning.PrepReport(engine="glue", input_files=input_files, records_read=records_read)
    report.blank_lines = blank_lines
    report.rows_written = reasons.get(None, 0)
    report.duplicates_removed = reasons.get(cleaning.DUPLICATE, 0)
    report.quarantined = {r: n for r, n in reasons.items() if r not in (None, cleaning.DUPLICATE)}
    report.customers = customers
    report.check_balance()
    return report


def run(spark, args: Mapping[str, str], s3_client) -> cleaning.PrepReport:  # pragma: no cover - needs Spark
    from pyspark.sql import functions as F

    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")  # as the Processing engine writes
    lines = spark.read.option("recursiveFileLookup", "true").text(args["input_uri"])
    lines = lines.withColumn("source", F.input_file_name())
    input_files = lines.select("source").distinct().count()
    if input_files == 0:
        raise GlueJobError(f"raw input {args['input_uri']} holds no files: nothing to prepare")
    blank = F.trim(F.col("value")) == ""
    blank_lines = lines.filter(blank).count()
    records = lines.filter(~blank)

    tagged = records.mapInPandas(parse_batches, schema=cleaning.TAGGED_SPARK_SCHEMA)
    valid = tagged.filter(F.col("reason").isNull())
    resolved = valid.groupBy("customer").applyInPandas(deduplicate_customer, schema=cleaning.TAGGED_SPARK_SCHEMA)
    final = tagged.filter(F.col("reason").isNotNull()).unionByName(resolved).persist()

    reasons = {row["reason"]: row["count"] for row in final.groupBy("reason").count().collect()}
    records_read = sum(reasons.values())
    if records_read == 0:
        raise GlueJobError(f"raw input {args['input_uri']} holds {input_files} file(s) but no records")
    written = final.filter(F.col("reason").isNull())
    customers = written.select("customer").distinct().count()
    report = build_report(
        input_files=input_files,
        records_read=records_read,
        blank_lines=blank_lines,
        reasons=reasons,
        customers=customers,
    )
    (
        written.select("customer", "timestamp", "reading")
        .repartition("customer")
        .sortWithinPartitions("customer", "timestamp")
        .write.mode("overwrite")
        .partitionBy("customer")
        .parquet(args["curated_uri"])
    )
    (
        final.filter(F.col("reason").isin(*cleaning.QUARANTINE_REASONS))
        .select("reason", "detail", "source", "raw")
        .write.mode("overwrite")
        .json(args["quarantine_uri"])
    )
    target = urlparse(args["report_uri"])
    s3_client.put_object(
        Bucket=target.netloc,
        Key=target.path.lstrip("/"),
        Body=report.to_json().encode(),
        ContentType="application/json",
    )
    final.unpersist()
    if report.rows_written == 0:
        raise GlueJobError(f"none of the {records_read} records is valid; see {args['quarantine_uri']}")
    return report


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in AWS Glue
    import boto3
    from awsglue.context import GlueContext
    from pyspark.context import SparkContext

    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    glue = GlueContext(SparkContext.getOrCreate())
    report = run(glue.spark_session, args, boto3.client("s3"))
    print(json.dumps({"prep": json.loads(report.to_json())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
