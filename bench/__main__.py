"""`make bench`: run every bench/bench_*.py, print each result, and rewrite bench/RESULTS.md.

`make bench ARGS="--quick"` runs fewer repetitions; `ARGS="synth"` runs only the benchmarks named.
`python -m bench accuracy --dev [--variant all|NAME,...] [--no-lightgbm]`: the accuracy bench's development
protocol (bench/bench_accuracy.py: data that ends before the test periods), where design variants are compared.
`python -m bench accuracy --cpu [--baseline REV]`: its CPU comparison with LightGBM L1 alone (no score).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import BenchResult, run_benchmark

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("only", nargs="*", help="benchmark names (bench_<name>.py); default: all")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    parser.add_argument("--dev", action="store_true", help="accuracy only: the development protocol")
    parser.add_argument("--variant", default="", help="accuracy --dev only: design variants to compare, or 'all'")
    parser.add_argument("--no-lightgbm", action="store_true", help="accuracy --dev only: skip the LightGBM peers")
    parser.add_argument("--cpu", action="store_true", help="accuracy only: the CPU comparison with LightGBM L1")
    parser.add_argument("--baseline", default="", help="accuracy --cpu only: a git revision's forecaster as an arm")
    args = parser.parse_args(argv)
    options = {}
    if args.cpu or args.baseline:
        if args.only != ["accuracy"] or not args.cpu or args.dev or args.variant or args.no_lightgbm:
            parser.error("--cpu [--baseline REV] is the accuracy bench's CPU comparison alone: run "
                         "`python -m bench accuracy --cpu [--baseline REV]`")  # fmt: skip
        options = {"cpu": True, "baseline": args.baseline}
    if args.dev or args.variant or args.no_lightgbm:
        if args.only != ["accuracy"] or not args.dev:
            parser.error("--dev, --variant and --no-lightgbm apply to the accuracy bench's development protocol "
                         "only: run `python -m bench accuracy --dev [--variant NAME] [--no-lightgbm]`")  # fmt: skip
        options = {"dev": True, "variants": args.variant, "lightgbm": not args.no_lightgbm}

    names = sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))
    selected = [name for name in names if not args.only or name in args.only]
    results = []
    for name in selected:
        print(f"== bench {name}", flush=True)
        result = _isolated(name, args.quick, options)
        print(result.console(), flush=True)
        results.append(result)

    if not args.no_write and not args.only:
        header = [
            "# Benchmark results",
            "",
            f"Written by `make bench` on {datetime.date.today().isoformat()}: {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}"
            f"{' (--quick)' if args.quick else ''}. Ratios are measured side by side in the same run.",
            "",
        ]
        manual = HERE / "RESULTS-manual.md"
        extra = ["", manual.read_text()] if manual.exists() else []
        (HERE / "RESULTS.md").write_text(
            "\n".join(header) + "\n".join(r.markdown() for r in results) + "\n".join(extra)
        )
        print(f"wrote {HERE / 'RESULTS.md'}")
    return 0 if all(result.met for result in results) else 1


def _isolated(name: str, quick: bool, options: dict) -> BenchResult:
    """Each benchmark in a fresh interpreter: process-wide settings one of them makes (torch threads, the C
    allocator's behaviour, warm caches) must not shape another's numbers."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_benchmark, name, quick, options).result()


if __name__ == "__main__":
    sys.exit(main())
