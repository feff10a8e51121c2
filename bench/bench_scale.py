"""Bounded memory: peak RSS of each pipeline step at 1,000 and 10,000 customers for fixed shard sizes, one
long-history case, wall time per record, and the prep parser against pyarrow.json on the same lines.

Each step is its own process (`python pipelines/steps/<step>.py`, as SageMaker and the local runner start it),
so its peak RSS is the kernel's own figure for that process (ru_maxrss, through GNU time). Prep runs with one worker, so
the figure is the step's whole footprint, not one of several workers'. The short cases use the shortest history
the trainer accepts with a one-day holdout and validation (12 days), so 10,000 customers fit in a few minutes on
two cores; the long case is two years (the longest history training uses) for a few customers. Training is the
closed-form fit (forecaster.py): its memory is set by the shard's data, its normal-equation sums and one customer
block's temporaries, not by the number of customers. Train and evaluate read curated Parquet a customer at a time
(series.read_curated), so the long case's reads hold the series and one customer's records.

Ratio: the largest step's peak RSS at 10,000 customers over the same at 1,000 (flat in customers: <= 1.5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchResult, median
from pipelines import datagen
from pipelines.steps import cleaning, prep
from pipelines.steps import paths as step_paths

ROOT = Path(__file__).resolve().parent.parent
SHARD_CUSTOMERS = 500  # training shard: evaluation and packaging follow the artifact's shards
SHARD_MB = 16  # prep's de-duplication shard (raw input per shard)
TRAIN_ARGS = ["--holdout-hours", "24", "--validation-hours", "24"]
TARGET = 1.5


@dataclass
class StepRun:
    seconds: float
    peak_mb: float


def _step(name: str, opt_ml: Path, args: list[str], **environ: str) -> StepRun:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({step_paths.OPT_ML_ENV: str(opt_ml), "PYTHONDONTWRITEBYTECODE": "1", **environ})
    # Through GNU time: a child's ru_maxrss starts at its parent's RSS at fork (Linux keeps the old mm's high-water
    # mark across exec), and this process holds a generated data set; time itself is a few MB.
    with tempfile.NamedTemporaryFile(mode="r") as peak:
        started = time.perf_counter()
        completed = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", peak.name, sys.executable, str(ROOT / step_paths.STEP_SCRIPTS[name]),
             *args],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            raise RuntimeError(f"{name} failed: {completed.stderr.decode()[-2000:]}")
        return StepRun(seconds, int(peak.read().split()[-1]) / 1024)  # KiB


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source, target_is_directory=True)


def pipeline(work: Path, customers: int, days: int) -> tuple[int, dict[str, StepRun]]:
    """Every step on a generated data set; returns (records, step -> run)."""
    raw = work / "prep" / step_paths.PREP_RAW
    spec = datagen.DatasetSpec(customers=customers, days=days, seed=15, late_start_share=0)  # all long enough
    generated = datagen.generate(spec, raw)
    curated = work / "prep" / step_paths.PREP_CURATED
    runs = {"prep": _step("prep", work / "prep", ["--workers", "1", "--shard-mb", str(SHARD_MB)])}
    model = work / "train" / "model"
    runs["train"] = _step(
        "train", work / "train", [*TRAIN_ARGS, "--device", "cpu", "--shard-customers", str(SHARD_CUSTOMERS)],
        SM_CHANNEL_TRAIN=str(curated), SM_MODEL_DIR=str(model), SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1",
        SM_NUM_GPUS="0",
    )  # fmt: skip
    _link(model, work / "evaluate" / step_paths.EVALUATE_MODEL)
    _link(curated, work / "evaluate" / step_paths.EVALUATE_CURATED)
    runs["evaluate"] = _step("evaluate", work / "evaluate", ["--model-package-group", "bench"])
    _link(model, work / "package" / step_paths.PACKAGE_MODEL)
    _link(work / "evaluate" / step_paths.EVALUATE_OUTPUT, work / "package" / step_paths.PACKAGE_EVALUATION)
    runs["package"] = _step("package", work / "package", ["--model-package-group", "bench", "--verify-sample", "5"])
    manifest = json.loads((work / "package" / step_paths.PACKAGE_OUTPUT / "manifest.json").read_text())
    # a few generated customers have too little data to train (outages): they are skipped, as in production
    print(f"bench scale: {customers} x {days} days, {generated.lines} records, {len(manifest['archives'])} archives:"
          f" {runs}", flush=True)  # fmt: skip
    return generated.lines, runs


def parser_speed(raw: Path, runs: int) -> tuple[int, float, float]:
    """(lines, hand parser s, pyarrow.json s) on the same valid lines, interleaved, medians."""
    import pyarrow as pa
    import pyarrow.json as pj

    lines = []
    for path in prep.input_files(raw):
        text = path.read_text().splitlines()
        tagged = cleaning.parse_lines(text, path.name)
        bad = {int(s.rsplit(":", 1)[1]) for s in cleaning.quarantined_rows(tagged)["source"]}
        lines += [line for number, line in enumerate(text, start=1) if number not in bad and line.strip()]
    data = ("\n".join(lines) + "\n").encode()
    schema = pa.schema([("customer_id", pa.string()), ("timestamp", pa.string()), ("reading", pa.float64()),
                        ("unit", pa.string())])  # fmt: skip
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    hand, arrow = [], []
    for _ in range(runs):
        started = time.perf_counter()
        cleaning.parse_lines(lines, "bench")
        hand.append(time.perf_counter() - started)
        started = time.perf_counter()
        pj.read_json(pa.BufferReader(data), parse_options=options)
        arrow.append(time.perf_counter() - started)
    return len(lines), median(hand), median(arrow)


def run(quick: bool = False) -> BenchResult:
    cases = [(1_000, 12), (10_000, 12), (50, 730)]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for customers, days in cases:
            results[(customers, days)] = pipeline(Path(scratch) / f"{customers}x{days}", customers, days)
        lines, hand, arrow = parser_speed(Path(scratch) / "1000x12" / "prep" / step_paths.PREP_RAW, 1 if quick else 3)
    rows = [
        ("shard sizes", f"training {SHARD_CUSTOMERS} customers (evaluate, package follow it); prep {SHARD_MB} MB raw"),
    ]
    for (customers, days), (records, runs) in results.items():
        label = f"{customers:,} customers x {days} days ({records / 1e6:.2f} M records)"
        rows.append((f"{label}: peak RSS", ", ".join(f"{name} {run.peak_mb:,.0f} MB" for name, run in runs.items())))
        per_record = [f"{name} {r.seconds / records * 1e6:.1f} µs ({r.seconds:.0f} s)" for name, r in runs.items()]
        rows.append((f"{label}: wall per record", ", ".join(per_record)))
    rows.append(
        ("prep parser on the same valid lines (median)",
         f"{lines:,} lines: hand parser {hand:.2f} s ({lines / hand / 1e3:.0f} k/s), pyarrow.json {arrow:.3f} s"
         f" ({lines / arrow / 1e3:.0f} k/s): {hand / arrow:.1f}x")
    )  # fmt: skip
    small, large = results[(1_000, 12)][1], results[(10_000, 12)][1]
    ratio = max(r.peak_mb for r in large.values()) / max(r.peak_mb for r in small.values())
    return BenchResult(
        name="Scale: peak memory of each step at 1,000 and 10,000 customers, fixed shard sizes",
        ratio_label="largest step's peak RSS, 10,000 customers / 1,000 customers",
        ratio=ratio,
        target=f"<= {TARGET}",
        met=ratio <= TARGET,
        rows=rows,
        notes=(
            "Each step is a separate process; peak RSS is the kernel's ru_maxrss of that process (through GNU time;"
            " prep with one worker). The pyarrow.json row parses only the lines the hand parser accepts (pyarrow"
            " fails a whole block on one malformed line, and checks none of the field rules), so it is an upper"
            " bound on what switching parsers could gain. A drop-in tried on 2026-12-01 (pyarrow.json per"
            " 1,000-line span, a malformed line sent to the hand parser, the same rows and quarantine on every"
            " test input) was only 1.7x faster end to end: after JSON decoding, timestamp parsing and building the"
            " tagged frame are about half the hand parser's time; and pyarrow 25.0.1 segfaults on a first row"
            " `null`. The hand parser stays."
        ),
    )
