"""The step interface: where each step script reads and writes inside its SageMaker container.

This is the contract between the step scripts and the pipeline definition (pipelines/definition.py), which
mounts S3 data at exactly these paths.

| step      | job type   | inputs (container path)                        | outputs (container path)               |
|-----------|------------|------------------------------------------------|----------------------------------------|
| prep      | Processing | /opt/ml/processing/input/raw (JSON lines)      | /opt/ml/processing/output/curated      |
|           |            |                                                | /opt/ml/processing/output/quarantine   |
|           |            |                                                | /opt/ml/processing/output/report       |
| train     | Training   | channel `train` = curated (SM_CHANNEL_TRAIN)   | SM_MODEL_DIR (-> model.tar.gz)         |
|           |            | /opt/ml/checkpoints (resume)                   | /opt/ml/checkpoints                    |
| evaluate  | Processing | /opt/ml/processing/input/model (model.tar.gz)  | /opt/ml/processing/output/evaluation   |
|           |            | /opt/ml/processing/input/curated               |   (evaluation.json + forecasts.png)    |
| package   | Processing | /opt/ml/processing/input/model (model.tar.gz)  | /opt/ml/processing/output/models       |
|           |            | /opt/ml/processing/input/evaluation            |   (<customer>.tar.gz + manifest.json)  |

Local runs (pipelines/local_runner.py, tests) set MODELGATE_OPT_ML to a work directory that replaces `/opt/ml`
in every path above, and the SM_* variables SageMaker sets for training jobs.

Entry points are files, not modules: SageMaker runs `python pipelines/steps/<step>.py` from the root of a source
bundle holding RUNTIME_SOURCES (below); each script puts that root on sys.path itself. Third-party packages per
step are in pipelines/steps/requirements.txt (pyarrow, pandas, numpy, torch, onnx, onnxruntime, onnxscript,
matplotlib, tqdm); the PyTorch training and processing images already carry torch and numpy.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelgate import evaluation_report

OPT_ML_ENV = "MODELGATE_OPT_ML"
CONTAINER_OPT_ML = Path("/opt/ml")

# Files (relative to the repository root) that every step script needs at run time, in SageMaker and in the
# local runner, which stages exactly these into its source bundle so that a missing file fails locally first.
RUNTIME_SOURCES: tuple[str, ...] = (
    "pipelines/__init__.py",
    "pipelines/steps",
    "pipelines/packaging",
    "modelgate/__init__.py",
    "modelgate/model_repository.py",
    "modelgate/evaluation_report.py",
)
STEP_SCRIPTS = {
    "prep": "pipelines/steps/prep.py",
    "train": "pipelines/steps/train.py",
    "evaluate": "pipelines/steps/evaluate.py",
    "package": "pipelines/steps/package.py",
}
REQUIREMENTS_FILE = "pipelines/steps/requirements.txt"

# Processing inputs/outputs, relative to /opt/ml (the pipeline definition uses container_path()).
PREP_RAW = "processing/input/raw"
PREP_CURATED = "processing/output/curated"
PREP_QUARANTINE = "processing/output/quarantine"
PREP_REPORT = "processing/output/report"
EVALUATE_MODEL = "processing/input/model"
EVALUATE_CURATED = "processing/input/curated"
EVALUATE_OUTPUT = "processing/output/evaluation"
PACKAGE_MODEL = "processing/input/model"
PACKAGE_EVALUATION = "processing/input/evaluation"
PACKAGE_OUTPUT = "processing/output/models"
TRAIN_CHANNEL = "train"
CHECKPOINTS = "checkpoints"

PREP_REPORT_FILE = "prep_report.json"
FORECAST_PLOT_FILE = evaluation_report.FORECAST_PLOT_FILE


def container_path(relative: str) -> str:
    """The absolute container path of one of the constants above, e.g. `/opt/ml/processing/input/raw`."""
    return str(CONTAINER_OPT_ML / relative)


def opt_ml(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(OPT_ML_ENV) or CONTAINER_OPT_ML)


@dataclass(frozen=True)
class PrepPaths:
    raw: Path
    curated: Path
    quarantine: Path
    report: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> PrepPaths:
        base = opt_ml(environ)
        return cls(base / PREP_RAW, base / PREP_CURATED, base / PREP_QUARANTINE, base / PREP_REPORT)


@dataclass(frozen=True)
class TrainPaths:
    train: Path
    model_dir: Path
    checkpoints: Path
    hosts: tuple[str, ...]
    current_host: str
    num_gpus: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> TrainPaths:
        base = opt_ml(environ)
        hosts = tuple(json.loads(environ.get("SM_HOSTS") or '["algo-1"]'))
        return cls(
            train=Path(environ.get(f"SM_CHANNEL_{TRAIN_CHANNEL.upper()}") or base / "input/data" / TRAIN_CHANNEL),
            model_dir=Path(environ.get("SM_MODEL_DIR") or base / "model"),
            checkpoints=base / CHECKPOINTS,
            hosts=hosts,
            current_host=environ.get("SM_CURRENT_HOST") or hosts[0],
            num_gpus=int(environ.get("SM_NUM_GPUS") or 0),
        )


@dataclass(frozen=True)
class EvaluatePaths:
    model: Path
    curated: Path
    evaluation: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EvaluatePaths:
        base = opt_ml(environ)
        return cls(base / EVALUATE_MODEL, base / EVALUATE_CURATED, base / EVALUATE_OUTPUT)


@dataclass(frozen=True)
class PackagePaths:
    model: Path
    evaluation: Path
    models: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> PackagePaths:
        base = opt_ml(environ)
        return cls(base / PACKAGE_MODEL, base / PACKAGE_EVALUATION, base / PACKAGE_OUTPUT)


class StepInputError(RuntimeError):
    """Input a step cannot work with (missing, empty, inconsistent); the message says what to fix."""


def fail(message: str, environ: Mapping[str, str] = os.environ) -> int:
    """Report a step failure where SageMaker shows it (training: FailureReason from /opt/ml/output/failure;
    processing: ExitMessage from /opt/ml/output/message) and on stderr; returns the exit status."""
    output = opt_ml(environ) / "output"
    try:
        output.mkdir(parents=True, exist_ok=True)
        for name in ("failure", "message"):
            (output / name).write_text(message[:1024])
    except OSError:
        pass  # a read-only or missing /opt/ml outside SageMaker must not hide the real error
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    return 1
