"""What every benchmark shares: timing helpers and the result record written to bench/RESULTS.md."""

from __future__ import annotations

import importlib
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class BenchResult:
    name: str
    ratio_label: str  # e.g. "whole app / minimal app"
    ratio: float
    target: str  # e.g. "<= 3.0"
    met: bool
    rows: list[tuple[str, str]] = field(default_factory=list)  # (what, measurement)
    notes: str = ""

    def markdown(self) -> str:
        lines = [f"## {self.name}", "", "| measurement | value |", "|---|---|"]
        lines += [f"| {what} | {value} |" for what, value in self.rows]
        verdict = "met" if self.met else "NOT met"
        lines += ["", f"**{self.ratio_label}: {self.ratio:.2f}** (target {self.target}: {verdict})"]
        if self.notes:
            lines += ["", self.notes]
        return "\n".join(lines) + "\n"

    def console(self) -> str:
        rows = "\n".join(f"  {what:<48} {value}" for what, value in self.rows)
        verdict = "met" if self.met else "NOT met"
        return f"{self.name}\n{rows}\n  => {self.ratio_label}: {self.ratio:.2f} (target {self.target}: {verdict})"


def wall_time(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - started


def interleaved(runs: int, **measure: Callable[[], float]) -> dict[str, list[float]]:
    """Run each measurement `runs` times, alternating, so that machine noise hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in measure}
    for _ in range(runs):
        for name, fn in measure.items():
            samples[name].append(fn())
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_benchmark(name: str, quick: bool, options: dict | None = None) -> BenchResult:
    """bench/bench_<name>.py's run(); a module-level function, so that a fresh process can be given it.
    `options`: that bench's own keyword arguments (the accuracy bench's dev protocol)."""
    return importlib.import_module(f"bench.bench_{name}").run(quick=quick, **(options or {}))
