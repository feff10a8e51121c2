"""Packaging step (SageMaker Processing): trained models -> one Triton model repository per customer, packed as
`<customer>.tar.gz`, plus manifest.json (modelgate.model_repository.Manifest), written to
/opt/ml/processing/output/models: the model version's S3 prefix, which the registration records as model data.

Inputs: /opt/ml/processing/input/model (the training job's model.tar.gz) and /opt/ml/processing/input/evaluation
(evaluation.json). Every trained customer must be in the evaluation report (and vice versa): packaging a model
nobody evaluated, or losing one that was, fails the step. The report is copied next to the archives, so a model
version's prefix holds everything about it. A sample of the ONNX models is checked against PyTorch (FORECAST) and
quantiles.bounds (FORECAST_P10/P90). An artifact without interval offsets is refused.
Bounded memory: the training artifact is read shard by shard (pipelines/steps/artifact.py), one shard's weights
at a time; the manifest lists every shard's archives.

Arguments: --model-package-group NAME (required), --verify-sample N (default 50).
Runtime: `python pipelines/steps/package.py ...` from the source bundle (pipelines/steps/paths.py
RUNTIME_SOURCES); needs torch, numpy, onnx, onnxscript, onnxruntime, tqdm.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

if __package__ in (None, ""):  # run as a script (SageMaker): make the source bundle's root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from modelgate.evaluation_report import FORECAST_PLOT_FILE, REPORT_FILE, EvaluationReportError, parse_report
from modelgate.model_repository import MANIFEST_NAME, Manifest
from pipelines.packaging.triton_repository import package_models
from pipelines.steps import artifact
from pipelines.steps.paths import PackagePaths, StepInputError, fail


def run(paths: PackagePaths, model_package_group: str, verify_sample: int = 50) -> Manifest:
    report_path = paths.evaluation / REPORT_FILE
    if not report_path.is_file():
        raise StepInputError(f"evaluation report {report_path} does not exist")
    try:
        report = parse_report(report_path.read_bytes())
    except EvaluationReportError as error:
        raise StepInputError(f"{report_path}: {error}") from None
    if report.model_package_group != model_package_group:
        raise StepInputError(
            f"the evaluation report is for group {report.model_package_group!r}, not {model_package_group!r}"
        )
    with tempfile.TemporaryDirectory() as scratch:
        shards = artifact.shards(paths.model, Path(scratch))
        evaluated = {metrics.customer for metrics in report.per_customer}
        trained = {customer for shard in shards for customer in shard.customers}
        if evaluated != trained:
            missing, unknown = sorted(trained - evaluated), sorted(evaluated - trained)
            raise StepInputError(
                f"the evaluation report does not match the trained models: not evaluated {missing[:5]}"
                f" ({len(missing)}), evaluated but not trained {unknown[:5]} ({len(unknown)})"
            )
        if paths.models.exists():
            shutil.rmtree(paths.models)
        entries = []
        for shard in shards:  # one shard's weights in memory at a time
            if not shard.customers:
                continue
            models = shard.load()
            if models.intervals is None:
                raise StepInputError(
                    f"{shard.weights.name} holds no P10/P90 interval offsets (an artifact from before them, or"
                    " models trained outside the training step): retrain with the pipeline's training step"
                )
            # the sample spread over the shards in proportion to their customers (at least one each)
            sample = -(-verify_sample * len(shard.customers) // len(trained)) if verify_sample else 0
            part = package_models(models, paths.models, model_package_group, verify_sample=sample)
            entries += part.archives
    manifest = Manifest(model_package_group, tuple(sorted(entries, key=lambda e: e.customer)))
    (paths.models / MANIFEST_NAME).write_text(manifest.to_json())  # every shard's archives (each call wrote its own)
    shutil.copyfile(report_path, paths.models / REPORT_FILE)
    if (paths.evaluation / FORECAST_PLOT_FILE).is_file():  # next to the report: the approvers' report page shows it
        shutil.copyfile(paths.evaluation / FORECAST_PLOT_FILE, paths.models / FORECAST_PLOT_FILE)
    return manifest


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(description="ModelGate packaging: Triton ensembles per customer")
    parser.add_argument("--model-package-group", "--model_package_group", dest="group", required=True)
    parser.add_argument("--verify-sample", "--verify_sample", dest="verify_sample", type=int, default=50)
    args = parser.parse_args(argv)
    try:
        manifest = run(PackagePaths.from_environ(environ), args.group, args.verify_sample)
    except StepInputError as error:
        return fail(f"package: {error}", environ)
    size = sum(entry.size for entry in manifest.archives)
    print(f"package: {len(manifest.archives)} archives, {size / 1e6:.1f} MB, group {manifest.model_package_group}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
