"""Per-customer Triton model repositories, packed as `<customer>.tar.gz`, plus the version's manifest.json:
the layout modelgate/model_repository.py specifies.

An archive's members sit at its root, which is a Triton model repository (names from `model_names(customer)`,
here for customer `cust-00001`):
    cust_00001_forecaster/config.pbtxt     platform onnxruntime_onnx;             1/model.onnx
    cust_00001/config.pbtxt                platform ensemble (the model clients call); 1/ (empty)
Every model batches (max_batch_size MAX_BATCH_SIZE): a request sends READINGS FP32 [n, WINDOW], n <= 64, and
receives FORECAST, FORECAST_P10 and FORECAST_P90, each FP32 [n, HORIZON] (or those it names). The ONNX model is
the whole forecast (normalisation, gap filling, the forecaster, the inverse transform, the quantiles:
pipelines/packaging/onnx_export.py); the ensemble's one step maps the
client's tensors to it, so clients keep calling `<customer>` and a later version may add steps without
changing the contract. The forecaster has no instance_group: Triton puts it on the GPU when there is one.

Archives are reproducible: the same models give byte-identical archives (sorted members, fixed mtime and owner).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from modelgate.model_repository import (
    ENSEMBLE_INPUT,
    ENSEMBLE_OUTPUTS,
    HORIZON,
    MAX_BATCH_SIZE,
    WINDOW,
    ArchiveEntry,
    Manifest,
    archive_name,
    model_names,
)
from pipelines.packaging import onnx_export
from pipelines.steps import quantiles
from pipelines.steps.forecaster import ForecasterParameters, Hyperparameters, TrainedModels, customer_keys


def _tensor(name: str, width: int) -> str:
    return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {width} ] }}'


def _outputs(outputs: tuple[str, ...]) -> str:
    return ",\n".join(_tensor(name, HORIZON) for name in outputs)


def forecaster_config(name: str, outputs: tuple[str, ...] = ENSEMBLE_OUTPUTS) -> str:
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {MAX_BATCH_SIZE}
input [
{_tensor(ENSEMBLE_INPUT, WINDOW)}
]
output [
{_outputs(outputs)}
]
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
"""


def ensemble_config(names: dict[str, str], outputs: tuple[str, ...] = ENSEMBLE_OUTPUTS) -> str:
    output_maps = "\n".join(f'      output_map {{ key: "{name}" value: "{name}" }}' for name in outputs)
    return f"""name: "{names["ensemble"]}"
platform: "ensemble"
max_batch_size: {MAX_BATCH_SIZE}
input [
{_tensor(ENSEMBLE_INPUT, WINDOW)}
]
output [
{_outputs(outputs)}
]
ensemble_scheduling {{
  step [
    {{ model_name: "{names["forecaster"]}" model_version: -1
      input_map {{ key: "{ENSEMBLE_INPUT}" value: "{ENSEMBLE_INPUT}" }}
{output_maps} }}
  ]
}}
"""


def repository_files(customer: str, onnx_model: bytes, outputs: tuple[str, ...] = ENSEMBLE_OUTPUTS) -> dict[str, bytes]:
    """Archive member path -> content of one customer's repository (directories end with '/'); `outputs`: those of
    the ONNX model (the pipeline's: every output of the contract; bench/bench_inference.py also builds a
    point-forecast-only one to measure what the quantiles cost)."""
    names = model_names(customer)
    return {
        f"{names['forecaster']}/config.pbtxt": forecaster_config(names["forecaster"], outputs).encode(),
        f"{names['forecaster']}/1/model.onnx": onnx_model,
        f"{names['ensemble']}/config.pbtxt": ensemble_config(names, outputs).encode(),
        f"{names['ensemble']}/1/": b"",  # Triton needs a version directory, even for an ensemble
    }


def pack(files: dict[str, bytes]) -> bytes:
    """A reproducible tar.gz of `files` (parent directories included, sorted, mtime 0, root-owned)."""
    entries: dict[str, bytes | None] = {}
    for path, content in files.items():
        parts = path.rstrip("/").split("/")
        for depth in range(1, len(parts)):
            entries.setdefault("/".join(parts[:depth]) + "/", None)
        entries[path] = None if path.endswith("/") else content
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(entries):
            content = entries[path]
            info = tarfile.TarInfo(path.rstrip("/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buffer.getvalue(), mtime=0)


def write_repository(files: dict[str, bytes], directory: Path) -> Path:
    """Unpacked repository (what Triton sees after the endpoint extracts the archive); for local serving."""
    for path, content in files.items():
        target = directory / path
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    return directory


@dataclass
class Packager:
    """Turns trained models into repositories; exports the ONNX graph once per `hidden` size."""

    models: TrainedModels
    _template: onnx.ModelProto | None = None

    def onnx_model(self, customer: str) -> bytes:
        index = self.models.customers.index(customer)
        if self._template is None:
            if self.models.intervals is None:
                raise onnx_export.OnnxExportError(
                    "the trained models carry no P10/P90 interval offsets: train them with the training step"
                    " (pipelines/steps/train.py estimates them, pipelines/steps/quantiles.py) and package its artifact"
                )
            core = onnx_export.export_template(self.models.hyperparameters.hidden)
            self._template = onnx_export.with_intervals(onnx_export.served_template(core))
        mean, std = float(self.models.mean[index]), float(self.models.std[index])
        return onnx_export.customer_model(self._template, self.models.params, index, mean, std, self.models.intervals)

    def files(self, customer: str) -> dict[str, bytes]:
        return repository_files(customer, self.onnx_model(customer))

    def verify(self, customer: str, rng: np.random.Generator) -> float:
        index = self.models.customers.index(customer)
        mean, std = float(self.models.mean[index]), float(self.models.std[index])
        model = self.onnx_model(customer)
        return onnx_export.verify(model, self.models.params, index, rng, mean, std, self.models.intervals)


def package_models(
    models: TrainedModels,
    output: Path,
    model_package_group: str,
    customers: Iterable[str] | None = None,
    verify_sample: int = 50,
    progress: bool = True,
) -> Manifest:
    """Write `<customer>.tar.gz` for each customer (default: all) and manifest.json into `output`. The ONNX
    model of `verify_sample` customers (spread over the list; all when larger) is checked against
    forecaster.predict (what evaluation scored) on readings with gaps."""
    chosen = list(models.customers if customers is None else customers)
    packager = Packager(models)
    output.mkdir(parents=True, exist_ok=True)
    entries = []
    for customer in tqdm(chosen, desc="package: customers", unit="model", disable=not progress, mininterval=2):
        archive = pack(packager.files(customer))
        name = archive_name(customer)
        (output / name).write_bytes(archive)
        entries.append(ArchiveEntry(customer, name, hashlib.sha256(archive).hexdigest(), len(archive)))
    rng = np.random.default_rng(0)
    step = max(1, len(chosen) // max(verify_sample, 1))
    for customer in chosen[::step][:verify_sample] if verify_sample else []:
        packager.verify(customer, rng)
    manifest = Manifest(model_package_group, tuple(sorted(entries, key=lambda e: e.customer)))
    (output / "manifest.json").write_text(manifest.to_json())
    return manifest


def example_models(customers: Iterable[str], hidden: int = 8, seed: int = 1) -> TrainedModels:
    """Untrained but non-trivial models (seasonal-naive linear part plus a random non-linear correction), for
    tests and demos that need valid repositories without training."""
    customers = tuple(customers)
    keys = customer_keys(customers, seed)
    params = ForecasterParameters.initial(keys, hidden, torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    params.w_out += 0.05 * torch.randn(params.w_out.shape, generator=generator)
    params.b_in += 0.01 * torch.randn(params.b_in.shape, generator=generator)
    mean = 1 + torch.rand(len(customers), generator=generator) * 10
    std = 0.2 + torch.rand(len(customers), generator=generator) * 3
    # Interval offsets of a plausible shape: -10..-30 % / +10..+30 %, wider later in the day.
    widen = 0.1 + 0.2 * torch.rand(len(customers), 1, generator=generator) * torch.linspace(0.5, 1, HORIZON)
    intervals = quantiles.Intervals(-widen, widen * 1.2, quantiles.floor_of(mean))
    return TrainedModels(customers, params, mean, std, Hyperparameters(hidden=hidden), intervals=intervals)
