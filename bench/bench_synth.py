"""Synth time of the whole ModelGate app (every environment, pipeline, cdk-nag) vs a one-bucket app."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from bench.common import BenchResult, interleaved, median, wall_time

ROOT = Path(__file__).resolve().parent.parent
TARGET = 3.0


def _synth(script: str) -> float:
    with tempfile.TemporaryDirectory() as outdir:
        env = {**os.environ, "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": "{}"}
        return wall_time([sys.executable, script], cwd=ROOT, env=env)


def run(quick: bool = False) -> BenchResult:
    runs = 2 if quick else 5
    whole = lambda: _synth("app.py")  # noqa: E731
    minimal = lambda: _synth(str(Path("bench") / "minimal_app.py"))  # noqa: E731
    whole(), minimal()  # warm-up: .pyc files, the Lambda dependency cache, the OS page cache
    samples = interleaved(runs, whole=whole, minimal=minimal)
    ratio = median(samples["whole"]) / median(samples["minimal"])
    return BenchResult(
        name="Synth: whole app vs minimal one-bucket app",
        ratio_label="whole app / minimal app (median wall time)",
        ratio=ratio,
        target=f"<= {TARGET}",
        met=ratio <= TARGET,
        rows=[
            ("runs (interleaved, after one warm-up each)", str(runs)),
            ("whole app: python app.py, median", f"{median(samples['whole']):.2f} s"),
            ("minimal app: bench/minimal_app.py, median", f"{median(samples['minimal']):.2f} s"),
            ("whole app, all runs", ", ".join(f"{t:.2f}" for t in samples["whole"])),
            ("minimal app, all runs", ", ".join(f"{t:.2f}" for t in samples["minimal"])),
        ],
        notes="Both are separate `python` processes, so each includes Python + jsii/Node start-up.",
    )
