"""The training job's model artifact: what train.py writes to SM_MODEL_DIR and evaluate/package read back.

Each training host writes one file pair per shard of customers it trained (train.py --shard-customers;
SageMaker merges every host's /opt/ml/model into one model.tar.gz, overwriting equal names, hence the host in
the name):
    shard-<host>-<part>.pt    torch.save of {"format", "customers", "w_in", "b_in", "w_out", "mean", "std"} and,
                              when trained by the training step, the P10/P90 offsets {"interval_low",
                              "interval_high", "interval_floor"} (pipelines/steps/quantiles.py): tensors and
                              strings only, so it loads with torch.load(weights_only=True) (no pickled code)
    shard-<host>-<part>.json  the same customers + hyperparameters, skipped customers and why, loss history,
                              device, seconds: readable without torch
Readers accept the merged directory, or the directory a Processing input puts `model.tar.gz` in. `shards` lists
and checks the shards from their JSON alone, and each `Shard.load()` reads one: evaluation and packaging hold
one shard's weights at a time (about 107 KB per customer), never every customer's.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from modelgate.model_repository import HORIZON, WINDOW
from pipelines.steps.forecaster import ForecasterParameters, Hyperparameters, TrainedModels
from pipelines.steps.paths import StepInputError
from pipelines.steps.quantiles import Intervals

FORMAT = 1
MODEL_ARCHIVE = "model.tar.gz"


def shard_name(host: str, part: int) -> str:
    return f"shard-{host}-{part:05d}"


def save(models: TrainedModels, model_dir: Path, host: str, part: int = 0) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / f"{shard_name(host, part)}.pt"
    torch.save(
        {
            "format": FORMAT,
            "customers": list(models.customers),
            "w_in": models.params.w_in.contiguous(),
            "b_in": models.params.b_in.contiguous(),
            "w_out": models.params.w_out.contiguous(),
            "mean": models.mean,
            "std": models.std,
            **_interval_state(models.intervals),
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
    weights.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return weights


INTERVAL_KEYS = ("interval_low", "interval_high", "interval_floor")


def _interval_state(intervals: Intervals | None) -> dict:
    return {} if intervals is None else dict(zip(INTERVAL_KEYS, intervals.tensors(), strict=True))


def _intervals(state: dict) -> Intervals | None:
    return Intervals(*(state[key] for key in INTERVAL_KEYS)) if INTERVAL_KEYS[0] in state else None


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


@dataclass(frozen=True)
class Shard:
    """One shard's files; its JSON summary is read (and checked) up front, its weights only by `load`."""

    weights: Path
    summary: dict

    @property
    def customers(self) -> tuple[str, ...]:
        return tuple(self.summary["customers"])

    @property
    def hyperparameters(self) -> Hyperparameters:
        return Hyperparameters(**self.summary["hyperparameters"])

    def load(self) -> TrainedModels:
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT:
            raise StepInputError(f"{self.weights.name}: artifact format {state.get('format')!r}, expected {FORMAT}")
        if list(state["customers"]) != self.summary["customers"]:
            raise StepInputError(f"{self.weights.name}: its customers differ from those of its JSON summary")
        summary = self.summary
        return TrainedModels(
            customers=tuple(state["customers"]),
            params=ForecasterParameters(state["w_in"], state["b_in"], state["w_out"]),
            mean=state["mean"],
            std=state["std"],
            hyperparameters=self.hyperparameters,
            skipped=dict(summary["skipped"]),
            history=summary["history"],
            device=summary["device"],
            seconds=summary["seconds"],
            intervals=_intervals(state),
        )


def shards(path: Path, scratch: Path | None = None) -> list[Shard]:
    """Every host's shards (sorted by name), checked for one format, window, horizon and set of hyperparameters,
    and for no customer in two shards. `scratch` is where a model.tar.gz gets extracted (keep it while loading)."""
    if not path.is_dir():
        raise StepInputError(f"model input {path} does not exist")
    directory = _model_directory(path, scratch or path / "extracted")
    found = sorted(directory.glob("shard-*.pt"))
    if not found:
        raise StepInputError(f"model input {path} holds no shard-*.pt (not a ModelGate training artifact?)")
    owner: dict[str, str] = {}
    result = []
    for weights in found:
        summary = json.loads(weights.with_suffix(".json").read_text())
        if summary.get("format") != FORMAT:
            raise StepInputError(f"{weights.name}: artifact format {summary.get('format')!r}, expected {FORMAT}")
        if summary["window"] != WINDOW or summary["horizon"] != HORIZON:
            raise StepInputError(f"{weights.name}: trained for window/horizon {summary['window']}/{summary['horizon']}")
        for customer in summary["customers"]:
            if customer in owner:
                raise StepInputError(
                    f"customer {customer} was trained on two hosts ({owner[customer]}, {weights.stem}): with more than"
                    " one training instance the train channel must be distributed ShardedByS3Key"
                )
            owner[customer] = weights.stem
        result.append(Shard(weights, summary))
    hyperparameters = {json.dumps(shard.summary["hyperparameters"], sort_keys=True) for shard in result}
    if len(hyperparameters) > 1:
        raise StepInputError(f"the shards of {path} were trained with different hyperparameters")
    return result


def skipped(found: list[Shard]) -> dict[str, str]:
    """Every shard's skipped customers and why, sorted."""
    return dict(sorted((c, why) for shard in found for c, why in shard.summary["skipped"].items()))


def load(path: Path, scratch: Path | None = None) -> TrainedModels:
    """Every shard, merged, customers sorted (all in memory: for tests and tools; the steps go shard by shard)."""
    found = shards(path, scratch)
    loaded = [shard.load() for shard in found]
    customers = [c for models in loaded for c in models.customers]
    order = sorted(range(len(customers)), key=customers.__getitem__)

    def merged(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors)[order]

    return TrainedModels(
        customers=tuple(customers[i] for i in order),
        params=ForecasterParameters(*(merged([m.params.tensors()[k] for m in loaded]) for k in range(3))),
        mean=merged([m.mean for m in loaded]),
        std=merged([m.std for m in loaded]),
        hyperparameters=found[0].hyperparameters,
        skipped=skipped(found),
        history=loaded[0].history,
        device=loaded[0].device,
        seconds=max(m.seconds for m in loaded),
        intervals=_merged_intervals([m.intervals for m in loaded if m.customers], merged),
    )


def _merged_intervals(parts: list[Intervals | None], merged) -> Intervals | None:
    if not parts or any(part is None for part in parts):
        return None  # an artifact from before intervals (or models trained outside the step): none to merge
    return Intervals(*(merged([part.tensors()[k] for part in parts]) for k in range(3)))
