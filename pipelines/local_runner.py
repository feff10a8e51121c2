"""Runs the training pipeline locally: the SAME step scripts, in the SAME order, the way SageMaker runs them.

prep -> train -> evaluate -> condition -> package -> register, on CPU when there is no GPU. Each step is a
separate `python pipelines/steps/<step>.py` process started from a source bundle holding exactly
pipelines.steps.paths.RUNTIME_SOURCES (as the pipeline's bundle does, so a file missing from it fails here
first), with MODELGATE_OPT_ML pointing its /opt/ml at a work directory and the SM_* variables of a training job.
Training with instance_count > 1 runs one process per host, each given a disjoint share of the customers'
objects (as S3 input ShardedByS3Key does), and merges the hosts' model directories into model.tar.gz as
SageMaker does. Registration (optional) uploads the version's archives to S3 and sends the same
CreateModelPackage request as the pipeline (pipelines/registration.py) with the boto3 clients it is given:
moto in tests and in the demo.

With `jobs` (sandbox.pipeline_jobs.SageMakerJobs: the Pipeline stack deployed in the local AWS), each step runs
the code its job downloads from the deployed definition's `code` input as its own role (list the prefix, get the
objects, as SageMaker does), the archives are uploaded as the Package job's role, and the version is registered
as the pipeline's execution role: a grant the real jobs would lack fails the local run too.

Library: `run_pipeline(LocalRunSettings(...), sagemaker=..., s3=...) -> LocalRunResult`.
CLI: `python -m pipelines.local_runner --work-dir .demo/pipeline --customers 100` (see --help).
The Glue prep engine needs AWS Glue; locally prep always runs the Processing script (same transformation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelgate.evaluation_report import REPORT_FILE, EvaluationReport, parse_report
from modelgate.model_repository import MANIFEST_NAME, Manifest
from pipelines import datagen, registration
from pipelines.steps import paths as step_paths

ROOT = Path(__file__).resolve().parent.parent
MARKER = ".modelgate-local-run"


class LocalStepError(RuntimeError):
    """A step script failed; the message is the one it reported to SageMaker."""


@dataclass(frozen=True)
class LocalRunSettings:
    work_dir: Path
    model_package_group: str
    raw: Path | None = None  # existing raw JSON lines; default: generate `dataset` into the work directory
    dataset: datagen.DatasetSpec = field(default_factory=datagen.DatasetSpec)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)  # train.py's, e.g. {"shard-customers": 50}
    instance_count: int = 1
    metric_threshold: float = 1.0  # the condition: aggregate MAPE ratio <= threshold
    image_uri: str | None = None  # the Triton image recorded in the registry (needed to register)
    model_data_url: str | None = None  # s3://bucket/prefix/ the version is uploaded to (needed to register)
    registered_by: str | None = None
    inference_instance_types: tuple[str, ...] = ()
    prep_workers: int = 2
    # CPU threads per step process (OMP_NUM_THREADS; None: the libraries' default, every core). On a machine
    # busy with other work, torch's threads spin waiting for each other: 1 thread trained the test data set with a
    # quarter of the CPU time of 2 under a load of 6 (tests run several of these at once).
    threads: int | None = None
    progress: bool = True
    jobs: Any = None  # sandbox.pipeline_jobs.SageMakerJobs: run as the deployed pipeline's jobs (see above)


@dataclass
class LocalRunResult:
    status: str  # "registered", "packaged" (no registry given) or "failed" (condition step)
    work_dir: Path
    prep_report: dict
    evaluation: EvaluationReport
    evaluation_dir: Path
    failure: str | None = None
    models_dir: Path | None = None
    manifest: Manifest | None = None
    model_package_arn: str | None = None
    model_data_url: str | None = None
    dataset: datagen.GeneratedDataset | None = None  # when the runner generated the raw data
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def plot(self) -> Path:
        return self.evaluation_dir / step_paths.FORECAST_PLOT_FILE


def condition_failure(report: EvaluationReport, threshold: float) -> str | None:
    """The condition step: None when the version may be registered, else the Fail step's message."""
    ratio = report.aggregate.mape_ratio
    if ratio <= threshold:
        return None
    return (
        f"aggregate MAPE ratio {ratio:.4f} (model MAPE {report.aggregate.mape:.4f} / {report.aggregate.baseline} MAPE"
        f" {report.aggregate.baseline_mape:.4f}) is above the threshold {threshold}: the models are not registered"
    )


class _Runner:
    def __init__(self, settings: LocalRunSettings, python: str) -> None:
        self.settings = settings
        self.python = python
        self.work = settings.work_dir.resolve()
        self.code = self.work / "code"
        self.seconds: dict[str, float] = {}
        self.dataset: datagen.GeneratedDataset | None = None
        self._job_code: dict[str, Path] = {}

    def prepare_work_dir(self) -> None:
        if self.work.exists() and any(self.work.iterdir()):
            if not (self.work / MARKER).exists():
                raise LocalStepError(f"work directory {self.work} is not empty and was not made by the local runner")
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / MARKER).write_text("made by pipelines/local_runner.py; deleted on the next run\n")
        if self.settings.jobs is not None:
            return  # each step downloads its own code (code_for)
        for source in step_paths.RUNTIME_SOURCES:
            origin, target = ROOT / source, self.code / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)

    def code_for(self, name: str) -> Path:
        """Where the step's code is: the bundle its job downloaded as its role (with `jobs`), else the copy."""
        jobs = self.settings.jobs
        if jobs is None:
            return self.code
        if name not in self._job_code:
            downloaded = self.work / "job-inputs" / name / "code"
            (bundle,) = jobs.download_code(name.capitalize(), downloaded)
            code = self.work / "job-code" / name
            code.mkdir(parents=True)
            with tarfile.open(bundle, "r:gz") as archive:
                archive.extractall(code, filter="data")
            self._job_code[name] = code
        return self._job_code[name]

    def step(self, name: str, script: str, args: list[str], opt_ml: Path, **environ: str) -> None:
        if self.settings.progress:
            print(f"== {name}", flush=True)
        code = self.code_for(name)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the bundle may be importable
        env.update({step_paths.OPT_ML_ENV: str(opt_ml), "PYTHONDONTWRITEBYTECODE": "1", **environ})
        if self.settings.threads:
            env["OMP_NUM_THREADS"] = str(self.settings.threads)
        started = time.perf_counter()
        completed = subprocess.run(
            [self.python, str(code / script), *args],
            env=env,
            cwd=code,
            capture_output=not self.settings.progress,
            text=True,
            check=False,
        )
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        if completed.returncode != 0:
            message = next(
                (p.read_text() for p in (opt_ml / "output" / "message", opt_ml / "output" / "failure") if p.exists()),
                (completed.stderr or "")[-2000:] or f"exit status {completed.returncode}",
            )
            raise LocalStepError(f"{name} failed: {message}")

    def raw_data(self) -> Path:
        if self.settings.raw is not None:
            return self.settings.raw.resolve()
        started = time.perf_counter()
        generated = self.dataset = datagen.generate(self.settings.dataset, self.work / "raw")
        self.seconds["datagen"] = time.perf_counter() - started
        if self.settings.progress:
            print(f"== datagen: {generated.lines} records, {generated.customers} customers", flush=True)
        return self.work / "raw"

    def prep(self, raw: Path) -> Path:
        opt_ml = self.work / "prep"
        mount(raw, opt_ml / step_paths.PREP_RAW)
        self.step("prep", step_paths.STEP_SCRIPTS["prep"], ["--workers", str(self.settings.prep_workers)], opt_ml)
        return opt_ml

    def train(self, curated: Path) -> Path:
        hosts = [f"algo-{number}" for number in range(1, self.settings.instance_count + 1)]
        partitions = sorted(p for p in curated.iterdir() if p.is_dir())
        merged = self.work / "train" / "model"
        merged.mkdir(parents=True)
        arguments = [item for key, value in self.settings.hyperparameters.items() for item in (f"--{key}", str(value))]
        for number, host in enumerate(hosts):
            base = self.work / "train" / host
            channel = base / "input" / "data" / step_paths.TRAIN_CHANNEL
            channel.mkdir(parents=True)
            for partition in partitions[number :: len(hosts)]:  # disjoint shares of the objects (ShardedByS3Key)
                shutil.copytree(partition, channel / partition.name)  # copies, as SageMaker downloads them
            environ = {
                "SM_CHANNEL_TRAIN": str(channel),
                "SM_MODEL_DIR": str(base / "model"),
                "SM_HOSTS": json.dumps(hosts),
                "SM_CURRENT_HOST": host,
                "SM_NUM_GPUS": str(_gpu_count()),
            }
            self.step("train", step_paths.STEP_SCRIPTS["train"], arguments, base, **environ)
            shutil.copytree(base / "model", merged, dirs_exist_ok=True)  # SageMaker merges every host's model dir
        archive = self.work / "train" / "output" / "model.tar.gz"
        archive.parent.mkdir(parents=True)
        with tarfile.open(archive, "w:gz") as tar:
            for item in sorted(merged.iterdir()):
                tar.add(item, arcname=item.name)
        return archive

    def evaluate(self, model_archive: Path, curated: Path) -> Path:
        opt_ml = self._step_on_model(
            "evaluate", model_archive, step_paths.EVALUATE_MODEL, {step_paths.EVALUATE_CURATED: curated}
        )
        return opt_ml / step_paths.EVALUATE_OUTPUT

    def package(self, model_archive: Path, evaluation: Path) -> Path:
        opt_ml = self._step_on_model(
            "package", model_archive, step_paths.PACKAGE_MODEL, {step_paths.PACKAGE_EVALUATION: evaluation}
        )
        return opt_ml / step_paths.PACKAGE_OUTPUT

    def _step_on_model(self, name: str, model_archive: Path, model_dir: str, inputs: dict[str, Path]) -> Path:
        """A processing step that reads the trained model.tar.gz (as SageMaker mounts it) plus `inputs`
        (container path -> local folder); returns the step's /opt/ml stand-in."""
        opt_ml = self.work / name
        (opt_ml / model_dir).mkdir(parents=True)
        shutil.copy2(model_archive, opt_ml / model_dir / "model.tar.gz")
        for container_path, local in inputs.items():
            mount(local, opt_ml / container_path)
        arguments = ["--model-package-group", self.settings.model_package_group]
        self.step(name, step_paths.STEP_SCRIPTS[name], arguments, opt_ml)
        return opt_ml


def mount(source: Path, target: Path) -> None:
    """What a Processing/Training input does: the data appears at the container path (here: a symlink)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve(), target_is_directory=source.is_dir())


def _gpu_count() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dev requirement
        return 0
    return torch.cuda.device_count()


def upload(s3: Any, directory: Path, prefix_url: str) -> None:
    target = urlparse(prefix_url)
    for path in sorted(directory.iterdir()):
        s3.upload_file(str(path), target.netloc, target.path.lstrip("/") + path.name)


def run_pipeline(
    settings: LocalRunSettings, sagemaker: Any = None, s3: Any = None, python: str = sys.executable
) -> LocalRunResult:
    """Run every step; register the version when a SageMaker client is given (then s3, image_uri and
    model_data_url are needed too). Raises LocalStepError when a step fails; a failed condition is a result."""
    if sagemaker is not None:
        missing = [n for n in ("image_uri", "model_data_url") if getattr(settings, n) is None] + (
            ["s3"] if s3 is None else []
        )
        if missing:
            raise ValueError(f"registering needs {', '.join(missing)}")
        registration.ModelVersion(  # validate before hours of work, not after
            settings.model_package_group, settings.model_data_url, settings.image_uri, settings.registered_by
        )
    runner = _Runner(settings, python)
    runner.prepare_work_dir()
    prep = runner.prep(runner.raw_data())
    curated = prep / step_paths.PREP_CURATED
    prep_report = json.loads((prep / step_paths.PREP_REPORT / step_paths.PREP_REPORT_FILE).read_text())
    model_archive = runner.train(curated)
    evaluation_dir = runner.evaluate(model_archive, curated)
    report = parse_report((evaluation_dir / REPORT_FILE).read_text())
    result = LocalRunResult("failed", runner.work, prep_report, report, evaluation_dir, seconds=runner.seconds)
    result.dataset = runner.dataset
    result.failure = condition_failure(report, settings.metric_threshold)
    if result.failure:
        if settings.progress:
            print(f"== condition: FAIL: {result.failure}", flush=True)
        return result
    result.models_dir = runner.package(model_archive, evaluation_dir)
    result.manifest = Manifest.from_json((result.models_dir / MANIFEST_NAME).read_text())
    result.status = "packaged"
    if sagemaker is not None:
        started = time.perf_counter()
        if settings.jobs is not None:  # as SageMaker: the job role uploads outputs, the pipeline role registers
            s3 = settings.jobs.job_account("Package").client("s3")
            sagemaker = settings.jobs.execution_account().client("sagemaker")
        upload(s3, result.models_dir, settings.model_data_url)
        if settings.jobs is None:  # a deployed pipeline registers into the group its Storage stack made
            registration.ensure_model_package_group(sagemaker, settings.model_package_group)
        version = registration.ModelVersion(
            model_package_group=settings.model_package_group,
            model_data_url=settings.model_data_url,
            image_uri=settings.image_uri,
            registered_by=settings.registered_by,
            description=f"{report.aggregate.customers} customers, MAPE ratio {report.aggregate.mape_ratio:.3f}",
            inference_instance_types=settings.inference_instance_types,
        )
        result.model_package_arn = registration.register(sagemaker, version)
        result.model_data_url = settings.model_data_url
        result.status = "registered"
        runner.seconds["register"] = time.perf_counter() - started
    return result


def _summary(result: LocalRunResult) -> dict:
    aggregate = result.evaluation.aggregate
    return {
        "status": result.status,
        "failure": result.failure,
        "customers": aggregate.customers,
        "skipped": len(result.evaluation.skipped),
        "mape": round(aggregate.mape, 4),
        "baseline_mape": round(aggregate.baseline_mape, 4),
        "mape_ratio": round(aggregate.mape_ratio, 4),
        "rmse": round(aggregate.rmse, 4),
        "baseline_rmse": round(aggregate.baseline_rmse, 4),
        "quarantined": result.prep_report.get("quarantined_total"),
        "archives": len(result.manifest.archives) if result.manifest else 0,
        "models_dir": str(result.models_dir) if result.models_dir else None,
        "plot": str(result.plot),
        "model_package_arn": result.model_package_arn,
        "model_data_url": result.model_data_url,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }


def _registry_clients(parser: argparse.ArgumentParser, config_region: str) -> dict[str, Any]:
    """SageMaker and S3 clients for --register, after checking there are credentials that work."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.Session()
    region = session.region_name or config_region  # the environment's region unless AWS_REGION says otherwise
    if session.get_credentials() is None:
        parser.error("--register needs AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/..., or a role); none found")
    try:
        session.client("sts", region_name=region).get_caller_identity()
    except (BotoCoreError, ClientError) as error:
        parser.error(f"--register: the AWS credentials do not work in {region}: {error}")
    return {
        "sagemaker": session.client("sagemaker", region_name=region),
        "s3": session.client("s3", region_name=region),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.local_runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path(".demo/pipeline"))
    parser.add_argument("--env", help="take group, threshold and Triton image from config/modelgate.yaml")
    parser.add_argument("--model", help="with --env: the config's model (name or group); default: the only one")
    parser.add_argument("--group", default="energy-forecast", help="model package group (without --env)")
    parser.add_argument("--raw", type=Path, help="existing raw JSON lines (default: generate a data set)")
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--days", type=int, default=42)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--instance-count", type=int, default=1, help="training hosts to simulate")
    parser.add_argument("--threshold", type=float, help="max aggregate MAPE ratio (default: config, or 1.0)")
    parser.add_argument("--register", action="store_true", help="upload and register (boto3 from the environment)")
    parser.add_argument("--bucket", help="S3 bucket for the version's archives (with --register)")
    parser.add_argument("--registered-by", help="e-mail of the person registering (with --register)")
    args = parser.parse_args(argv)

    group, threshold, image, instance_types = args.group, 1.0, None, ()
    if args.env:
        from infra.config import ConfigError, load_config
        from infra.triton_images import image_uri

        try:
            config = load_config()
            config.environment(args.env)
            if args.model is None and len(config.models) > 1:
                names = ", ".join(model.name for model in config.models)
                raise ConfigError(f"{config.source}: several models ({names}): name one with --model")
            model = config.model(args.model) if args.model else config.models[0]
        except ConfigError as error:
            parser.error(str(error))
        environment = model.environments[args.env]  # the model's own settings there
        group = model.model_package_group
        threshold = environment.training.metric_threshold
        image = image_uri(environment.region, environment.serving.triton_version)
        instance_types = (environment.serving.instance_type,)
    run_id = datetime.datetime.now(datetime.UTC).strftime("local-%Y%m%dT%H%M%S")
    settings = LocalRunSettings(
        work_dir=args.work_dir,
        model_package_group=group,
        raw=args.raw,
        dataset=datagen.DatasetSpec(customers=args.customers, days=args.days, seed=args.seed),
        instance_count=args.instance_count,
        metric_threshold=args.threshold if args.threshold is not None else threshold,
        image_uri=image,
        model_data_url=f"s3://{args.bucket}/models/{group}/{run_id}/" if args.bucket else None,
        registered_by=args.registered_by,
        inference_instance_types=instance_types,
    )
    clients: dict[str, Any] = {}
    if args.register:
        if not (args.bucket and image):
            parser.error("--register needs --bucket and --env (for the Triton image)")
        clients = _registry_clients(parser, environment.region)  # before training: fail in seconds, not after it
        if not args.registered_by:
            print(
                "WARNING: no --registered-by: the version is registered without registered_by, so no approver is "
                "e-mailed (separation of duties could not be enforced). Pass --registered-by you@example.com.",
                file=sys.stderr,
            )
    try:
        result = run_pipeline(settings, **clients)
    except (LocalStepError, ValueError) as error:
        print(f"local pipeline failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(_summary(result), indent=1))
    return 0 if result.status != "failed" else 2


if __name__ == "__main__":
    sys.exit(main())
