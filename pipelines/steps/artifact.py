"""The training job's model artifact: what train.py writes to SM_MODEL_DIR and evaluate/package read back.

Each training host writes its own shard (SageMaker merges every host's /opt/ml/model into one model.tar.gz,
overwriting equal names, hence one name per host):
    shard-<host>.pt    torch.save of {"format", "customers", "w_in", "b_in", "w_out", "mean", "std"}: tensors and
                       strings only, so it loads with torch.load(weights_only=True) (no pickled code)
    shard-<host>.json  the same customers + hyperparameters, skipped customers and why, loss history, device,
                       seconds: readable without torch
Readers accept the merged directory, or the directory a Processing input puts `model.tar.gz` in.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict
from pathlib import Path

import torch

from modelgate.model_repository import HORIZON, WINDOW
from pipelines.steps.forecaster import ForecasterParameters, Hyperparameters, TrainedModels
from pipelines.steps.paths import StepInputError

FORMAT = 1
MODEL_ARCHIVE = "model.tar.gz"


def save(models: TrainedModels, model_dir: Path, host: str) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / f"shard-{host}.pt"
    torch.save(
        {
            "format": FORMAT,
            "customers": list(models.customers),
            "w_in": models.params.w_in.contiguous(),
            "b_in": models.params.b_in.contiguous(),
            "w_out": models.params.w_out.contiguous(),
            "mean": models.mean,
            "std": models.std,
        },
        weights,
    )
    summary = {
        "format": FORMAT,
        "host": host,
        "customers": list(models.customers),
        "skipped": models.skipped,
        "hyperparameters": asdict(models.hyperparameters),
        "window": WINDOW,
        "horizon": HORIZON,
        "history": models.history,
        "device": models.device,
        "seconds": round(models.seconds, 3),
    }
    (model_dir / f"shard-{host}.json").write_text(json.dumps(summary, indent=1))
    return weights


def safe_extract(archive: tarfile.TarFile, target: Path) -> None:
    """Extract regular files and directories only, never outside `target` (the tar `data` filter's rules,
    also on Pythons that predate it)."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(target, filter="data")
        return
    root = target.resolve()
    for member in archive.getmembers():
        destination = (target / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not destination.is_relative_to(root):
            raise StepInputError(f"refusing archive member {member.name!r}")
    archive.extractall(target)  # noqa: S202 - every member was checked above


def _model_directory(path: Path, scratch: Path) -> Path:
    if (path / MODEL_ARCHIVE).is_file():
        scratch.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path / MODEL_ARCHIVE) as archive:
            safe_extract(archive, scratch)
        return scratch
    return path


def load(path: Path, scratch: Path | None = None) -> TrainedModels:
    """Every host's shard, merged, customers sorted. `scratch` is where a model.tar.gz gets extracted."""
    if not path.is_dir():
        raise StepInputError(f"model input {path} does not exist")
    directory = _model_directory(path, scratch or path / "extracted")
    shards = sorted(directory.glob("shard-*.pt"))
    if not shards:
        raise StepInputError(f"model input {path} holds no shard-*.pt (not a ModelGate training artifact?)")
    customers: list[str] = []
    owner: dict[str, str] = {}
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in ("w_in", "b_in", "w_out", "mean", "std")}
    skipped: dict[str, str] = {}
    summaries = []
    for shard in shards:
        state = torch.load(shard, map_location="cpu", weights_only=True)
        summary = json.loads(shard.with_suffix(".json").read_text())
        if state.get("format") != FORMAT or summary.get("format") != FORMAT:
            raise StepInputError(f"{shard.name}: artifact format {state.get('format')!r}, expected {FORMAT}")
        if summary["window"] != WINDOW or summary["horizon"] != HORIZON:
            raise StepInputError(f"{shard.name}: trained for window/horizon {summary['window']}/{summary['horizon']}")
        for customer in state["customers"]:
            if customer in owner:
                raise StepInputError(
                    f"customer {customer} was trained on two hosts ({owner[customer]}, {shard.stem}): with more than"
                    " one training instance the train channel must be distributed ShardedByS3Key"
                )
            owner[customer] = shard.stem
        customers += state["customers"]
        for name in parts:
            parts[name].append(state[name])
        skipped.update(summary["skipped"])
        summaries.append(summary)
    hyperparameters = {json.dumps(s["hyperparameters"], sort_keys=True) for s in summaries}
    if len(hyperparameters) > 1:
        raise StepInputError(f"the shards of {path} were trained with different hyperparameters")
    order = sorted(range(len(customers)), key=customers.__getitem__)
    merged = {name: torch.cat(tensors)[order] for name, tensors in parts.items()}
    return TrainedModels(
        customers=tuple(customers[i] for i in order),
        params=ForecasterParameters(merged["w_in"], merged["b_in"], merged["w_out"]),
        mean=merged["mean"],
        std=merged["std"],
        hyperparameters=Hyperparameters(**summaries[0]["hyperparameters"]),
        skipped=dict(sorted(skipped.items())),
        history=summaries[0]["history"],
        device=summaries[0]["device"],
        seconds=max(s["seconds"] for s in summaries),
    )
