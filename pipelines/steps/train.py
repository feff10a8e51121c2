"""Training step (SageMaker TrainingStep, PyTorch image): one forecasting model per customer, all customers of
this host in one batched run on its GPU (CPU when there is none). See pipelines/steps/forecaster.py.

Reads the `train` channel (SM_CHANNEL_TRAIN: curated Parquet, customer=<id>/ partitions). With more than one
instance the channel must be distributed ShardedByS3Key: each host then receives, and trains, a disjoint set of
customers (prep writes one object per customer, so a customer is never split). A customer's model does not
depend on the host it lands on, so instance_count changes speed, not results.
Bounded memory: a host reads and trains its customers in shards of at most --shard-customers (sorted by id), one
after the other (series.read_curated reads a customer at a time), so its peak memory is set by the shard size, not
by how many customers it has; a customer's model does not depend on its shard either. Writes
SM_MODEL_DIR/shard-<host>-<part>.{pt,json} per shard (pipelines/steps/artifact.py). Checkpoints each shard's
finished fit to /opt/ml/checkpoints (SageMaker syncs it with the job's checkpoint S3 URI: use one URI per pipeline
execution): a restarted job reads finished shards back.

Hyperparameters (SageMaker passes them as `--name value`; dashes or underscores): batch-size (training windows
per customer per chunk of the fit's pass), hidden, seed, holdout-hours, validation-hours, min-coverage, device
(auto|cuda|cpu), checkpoint-minutes, shard-customers (default SHARD_CUSTOMERS). The fit is closed-form
(forecaster.py): the former Adam trainer's epochs, learning-rate, steps-per-epoch and correction-hours are refused
as unknown arguments. An execution started before a deploy that removed them runs the code of its own definition
(the source bundle's S3 key is content-addressed), so no running pipeline passes them to this script.

Runtime: `python pipelines/steps/train.py ...` from the source bundle (pipelines/steps/paths.py RUNTIME_SOURCES);
needs torch (in the image), numpy, pandas, pyarrow, tqdm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script (SageMaker): make the source bundle's root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from pipelines.steps import artifact, forecaster, quantiles, series
from pipelines.steps.paths import StepInputError, TrainPaths, fail

# Customers per shard: what a host holds at once, whatever its number of customers (bench/bench_scale.py measures
# a shard's peak memory at short and two-year histories).
SHARD_CUSTOMERS = 500
REMOVED = "epochs, learning-rate, steps-per-epoch and correction-hours went with the closed-form fit: remove them"


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description="ModelGate training: one forecasting model per customer, batched")
    defaults = forecaster.Hyperparameters()
    for field in fields(forecaster.Hyperparameters):
        dashed = field.name.replace("_", "-")
        names = [f"--{dashed}"] + ([f"--{field.name}"] if dashed != field.name else [])
        parse.add_argument(*names, dest=field.name, type=type(getattr(defaults, field.name)), default=None)
    parse.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parse.add_argument(
        "--checkpoint-minutes", "--checkpoint_minutes", dest="checkpoint_minutes", type=float, default=10
    )
    parse.add_argument(
        "--shard-customers", "--shard_customers", dest="shard_customers", type=int, default=SHARD_CUSTOMERS
    )
    return parse


def choose_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise StepInputError("--device cuda was requested but no CUDA GPU is visible to PyTorch")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


@dataclass
class TrainSummary:
    customers: int = 0
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    shards: int = 0
    final_loss: float | None = None
    device: str = "cpu"
    seconds: float = 0.0


def run(args: argparse.Namespace, paths: TrainPaths) -> TrainSummary:
    given = {f.name: getattr(args, f.name) for f in fields(forecaster.Hyperparameters)}
    chosen = {name: value for name, value in given.items() if value is not None}
    try:
        hp = forecaster.Hyperparameters(**chosen)
    except ValueError as error:
        raise StepInputError(f"bad hyperparameters: {error}") from None
    device = choose_device(args.device)
    several_hosts = len(paths.hosts) > 1
    has_data = paths.train.is_dir() and any(paths.train.rglob("*.parquet"))
    if several_hosts and not has_data:
        # More hosts than customer objects: ShardedByS3Key left this one without data. Not an error.
        print(f"train: host {paths.current_host} received no customers; writing an empty shard", flush=True)
        files: dict = {}
    else:
        files = series.curated_files(paths.train)
    parts = series.shards(list(files), args.shard_customers)
    print(
        f"train: host {paths.current_host} of {len(paths.hosts)}, {len(files)} customers in {len(parts)} shard(s)"
        f" of <= {args.shard_customers}, device {device} (SM_NUM_GPUS={paths.num_gpus}), {hp}",
        flush=True,
    )
    summary = TrainSummary(device=str(device))
    if not parts:
        empty = forecaster.TrainedModels((), _empty_params(hp), torch.zeros(0), torch.zeros(0), hp)
        artifact.save(empty, paths.model_dir, paths.current_host)
    for part, customers in enumerate(parts):
        data = series.read_curated(paths.train, customers, files)
        name = f"train-{artifact.shard_name(paths.current_host, part)}"
        checkpointer = forecaster.Checkpointer(paths.checkpoints, name, 60 * args.checkpoint_minutes)
        models = forecaster.train(data, hp, device, checkpointer)
        models = quantiles.attach(models, data)  # P10/P90 offsets from the point model's validation errors
        del data  # before the next shard is read: one shard in memory at a time
        artifact.save(models, paths.model_dir, paths.current_host, part)
        summary.customers += len(models.customers)
        summary.skipped.update(models.skipped)
        summary.shards += 1
        summary.final_loss = models.history[-1] if models.history else summary.final_loss
        summary.seconds += models.seconds
        del models
    if not summary.customers and not several_hosts:
        reasons = "; ".join(f"{c}: {why}" for c, why in list(summary.skipped.items())[:5])
        count = len(summary.skipped)
        raise StepInputError(f"no customer has enough data to train a model ({count} skipped: {reasons})")
    return summary


def _empty_params(hp: forecaster.Hyperparameters) -> forecaster.ForecasterParameters:
    return forecaster.ForecasterParameters.initial(
        forecaster.customer_keys([], hp.seed), hp.hidden, torch.device("cpu")
    )


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args, unknown = parser().parse_known_args(argv)
    if unknown:  # in the job's failure reason, not only its log
        return fail(f"train: unknown hyperparameters: {' '.join(unknown)} ({REMOVED})", environ)
    try:
        models = run(args, TrainPaths.from_environ(environ))
    except StepInputError as error:
        return fail(f"train: {error}", environ)
    summary = {
        "customers": models.customers,
        "skipped": len(models.skipped),
        "shards": models.shards,
        "final_loss": models.final_loss,
        "device": models.device,
        "seconds": round(models.seconds, 2),
    }
    print(f"train: {json.dumps(summary)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
