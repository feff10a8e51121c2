"""Cold-import time of each approval Lambda handler vs `import boto3` (the floor of any Python Lambda).

Every sample is a fresh `python -c "import ..."` process (no shared import cache), the handlers and the boto3
baseline interleaved so that machine noise hits them alike. Also checks that no handler drags in the sagemaker
SDK or other heavy ML packages (they are not in the Lambda bundle and would cost seconds).

The approval API imports PyJWT/cryptography on its first token verification (an approver's first request has no
session yet: it is only redirected to sign in). For transparency the bench also reports the import including
that stack (`+ jwt`), the cost its sign-in callback pays once per container; the target is on cold import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.common import BenchResult, interleaved, median, wall_time

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ("lambdas.request_approval", "lambdas.approval_api", "lambdas.post_inference")
HEAVY = ("sagemaker", "pandas", "torch", "numpy", "aws_cdk")
TARGET = 1.5


def _import(module: str) -> float:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "AWS_DEFAULT_REGION": "eu-west-1"}
    return wall_time([sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env)


def _heavy_modules(module: str) -> list[str]:
    probe = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def run(quick: bool = False) -> BenchResult:
    runs = 7 if quick else 21
    measure = {"boto3": lambda: _import("boto3")}
    for handler in HANDLERS:
        measure[handler] = lambda handler=handler: _import(handler)
    measure["api+jwt"] = lambda: _import("lambdas.approval_api, modelgate.jwt_auth")
    for fn in measure.values():
        fn()  # warm-up: .pyc files and the OS page cache
    samples = interleaved(runs, **measure)
    baseline = median(samples["boto3"])
    ratios = {handler: median(samples[handler]) / baseline for handler in HANDLERS}
    heavy = {handler: _heavy_modules(handler) for handler in HANDLERS}
    worst = max(ratios.values())
    rows = [("runs (interleaved, fresh processes, after one warm-up each)", str(runs))]
    rows.append(("import boto3, median", f"{baseline * 1000:.0f} ms"))
    for handler in HANDLERS:
        rows.append(
            (f"import {handler}, median", f"{median(samples[handler]) * 1000:.0f} ms ({ratios[handler]:.2f}x boto3)")
        )
    with_jwt = median(samples["api+jwt"])
    rows.append(
        (
            "import lambdas.approval_api + jwt (its first sign-in), median",
            f"{with_jwt * 1000:.0f} ms ({with_jwt / baseline:.2f}x boto3)",
        )
    )
    rows.append(
        ("heavy packages imported by handlers", ", ".join(f"{h}: {m}" for h, m in heavy.items() if m) or "none")
    )
    return BenchResult(
        name="Lambda handler cold import vs import boto3",
        ratio_label="slowest handler / boto3 (median wall time)",
        ratio=worst,
        target=f"<= {TARGET}, no sagemaker SDK",
        met=worst <= TARGET and not any(heavy.values()),
        rows=rows,
        notes="Each sample includes interpreter start-up (~20 ms), as a Lambda cold start does.",
    )
