"""A cold synth's pipeline definitions: one SDK process for all of them (`shared_builders`, what build_app does)
vs a fresh sealed child per definition (what it did before), on every distinct definition of the shipped config
and of the many-models example. Caches are bypassed: this is the first synth on a fresh checkout (CI, a new
machine, any change to a definition source), which builds every (model, environment)'s definition."""

from __future__ import annotations

import resource
import time

from bench.common import BenchResult, median

CONFIGS = ("config/modelgate.yaml", "config/examples/many-models.yaml")
TARGET = 2.0


def _distinct_settings() -> list:
    """Every DefinitionSettings the configs' apps build (recorded while building them; cached ones too)."""
    from infra.build import pipeline_assets
    from infra.constructs import training_pipeline
    from stacks.app_builder import build_app

    seen: dict = {}
    original = training_pipeline.pipeline_definition

    def record(settings):
        seen.setdefault(settings.digest(), settings)
        return pipeline_assets.pipeline_definition(settings)

    training_pipeline.pipeline_definition = record
    try:
        for config in CONFIGS:
            build_app({"config": config}, outdir=None)
    finally:
        training_pipeline.pipeline_definition = original
    return list(seen.values())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(quick: bool = False) -> BenchResult:
    from infra.build.pipeline_assets import generate_definition, shared_builders

    settings = _distinct_settings()
    runs = 1 if quick else 3
    samples: dict[str, list[tuple[float, float]]] = {"fresh": [], "shared": []}
    texts = {}
    for _ in range(runs):
        for way in samples:
            cpu, started = _children_cpu(), time.perf_counter()
            if way == "shared":
                with shared_builders():
                    texts[way] = [generate_definition(s) for s in settings]
            else:
                texts[way] = [generate_definition(s) for s in settings]
            samples[way].append((time.perf_counter() - started, _children_cpu() - cpu))
    if texts["fresh"] != texts["shared"]:
        raise AssertionError("the shared builder's definitions differ from fresh children's")
    wall = {way: median([w for w, _ in values]) for way, values in samples.items()}
    cpu = {way: median([c for _, c in values]) for way, values in samples.items()}
    ratio = wall["fresh"] / wall["shared"]
    n = len(settings)
    return BenchResult(
        name="Pipeline definitions of a cold synth: one SDK process vs a child per definition",
        ratio_label="a child per definition / one shared process (median wall time)",
        ratio=ratio,
        target=f">= {TARGET}",
        met=ratio >= TARGET,
        rows=[
            ("configs, distinct definitions", f"{', '.join(CONFIGS)}: {n}"),
            ("runs (interleaved)", str(runs)),
            ("a fresh child per definition: wall / CPU, median", f"{wall['fresh']:.1f} s / {cpu['fresh']:.1f} s"),
            ("one shared process: wall / CPU, median", f"{wall['shared']:.1f} s / {cpu['shared']:.1f} s"),
            ("per definition: fresh / shared wall", f"{wall['fresh'] / n:.2f} s / {wall['shared'] / n:.2f} s"),
            ("definitions identical both ways", "yes (checked every run)"),
        ],
        notes=(
            "CPU is the children's (the SDK runs there). A fresh child pays the sagemaker SDK's import and its "
            "first-use set-up for every definition; the shared one pays them once per synth and region."
        ),
    )
