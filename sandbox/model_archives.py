"""Model archives that follow modelgate.model_repository, for serving tests, benchmarks and the demo.

Each customer's archive is the Triton ensemble of the contract: a Python preprocess model (normalise with the
customer's mean/std, forward-fill gaps, leading gaps -> 0), the ONNX forecaster (window -> forecast, a linear
autoregression plus a ReLU correction, the shape of the training pipeline's model), a Python postprocess model
(back to reading units) and the ensemble wiring them. The ONNX model is configured for Triton's ONNX Runtime
backend on GPU, as SageMaker runs it.

The weights here are random (seeded per customer), not trained: serving only needs the files to be right.
`reference_forecast` computes the same forecast in numpy and `torch_forecaster` gives the model as a PyTorch
module, so tests and benchmarks can check Triton's answers and compare against calling the model directly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelgate.model_repository import (
    ENSEMBLE_INPUT,
    ENSEMBLE_OUTPUT,
    HORIZON,
    MANIFEST_NAME,
    ONNX_INPUT,
    ONNX_OUTPUT,
    WINDOW,
    ArchiveEntry,
    Manifest,
    archive_name,
    model_names,
)

MAX_BATCH = 64
NORMALISATION_FILE = "normalisation.json"

_PREPROCESS = '''
"""Preprocess: raw readings [N, WINDOW] (NaN = gap) -> normalised, gap-filled window [N, WINDOW]."""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(args["model_repository"], args["model_version"], "normalisation.json")) as f:
            stats = json.load(f)
        self.mean, self.std = np.float32(stats["mean"]), np.float32(stats["std"])

    def execute(self, requests):
        responses = []
        for request in requests:
            readings = pb_utils.get_input_tensor_by_name(request, "READINGS").as_numpy().astype(np.float32)
            z = (readings - self.mean) / self.std
            # forward fill: each hour takes the last reading at or before it; none before -> 0 (the mean)
            positions = np.where(np.isnan(z), 0, np.arange(z.shape[-1]))
            np.maximum.accumulate(positions, axis=-1, out=positions)
            window = np.nan_to_num(np.take_along_axis(z, positions, axis=-1), nan=0.0).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("WINDOW", window)]))
        return responses
'''

_POSTPROCESS = '''
"""Postprocess: normalised forecast [N, HORIZON] -> forecast in reading units."""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(args["model_repository"], args["model_version"], "normalisation.json")) as f:
            stats = json.load(f)
        self.mean, self.std = np.float32(stats["mean"]), np.float32(stats["std"])

    def execute(self, requests):
        responses = []
        for request in requests:
            forecast = pb_utils.get_input_tensor_by_name(request, "FORECAST_NORMALISED").as_numpy()
            value = (forecast * self.std + self.mean).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("FORECAST", value)]))
        return responses
'''


@dataclass(frozen=True)
class ForecasterWeights:
    w_in: np.ndarray  # [WINDOW, HORIZON + hidden]
    b_in: np.ndarray  # [HORIZON + hidden]
    w_out: np.ndarray  # [hidden, HORIZON]
    mean: float
    std: float

    @classmethod
    def random(cls, customer: str, hidden: int = 16, seed: int = 1) -> ForecasterWeights:
        rng = np.random.default_rng([zlib.crc32(customer.encode()), seed])
        w_lin = np.zeros((WINDOW, HORIZON), np.float32)
        w_lin[np.arange(HORIZON), np.arange(HORIZON)] = 1.0  # seasonal naive: the same hour a week earlier
        w_lin += rng.normal(0, 0.01, w_lin.shape).astype(np.float32)
        w_hid = (rng.normal(0, 1, (WINDOW, hidden)) / np.sqrt(WINDOW)).astype(np.float32)
        return cls(
            w_in=np.concatenate([w_lin, w_hid], axis=1),
            b_in=rng.normal(0, 0.01, HORIZON + hidden).astype(np.float32),
            w_out=rng.normal(0, 0.1, (hidden, HORIZON)).astype(np.float32),
            mean=float(rng.uniform(0.5, 5.0)),
            std=float(rng.uniform(0.2, 1.5)),
        )


def fill_gaps(z: np.ndarray) -> np.ndarray:
    positions = np.where(np.isnan(z), 0, np.arange(z.shape[-1]))
    np.maximum.accumulate(positions, axis=-1, out=positions)
    return np.nan_to_num(np.take_along_axis(z, positions, axis=-1), nan=0.0)


def reference_forecast(weights: ForecasterWeights, readings: np.ndarray) -> np.ndarray:
    """Readings [N, WINDOW] (NaN = gap) -> forecast [N, HORIZON], as the ensemble computes it."""
    window = fill_gaps((readings.astype(np.float32) - weights.mean) / weights.std).astype(np.float32)
    z = window @ weights.w_in + weights.b_in
    forecast = z[:, :HORIZON] + np.maximum(z[:, HORIZON:], 0) @ weights.w_out
    return (forecast * weights.std + weights.mean).astype(np.float32)


def onnx_model(weights: ForecasterWeights) -> bytes:
    """The forecaster as ONNX: `window` [N, WINDOW] -> `forecast` [N, HORIZON] (normalised units)."""
    from onnx import TensorProto, helper, numpy_helper

    hidden = weights.w_out.shape[0]
    initializers = [
        numpy_helper.from_array(weights.w_in, "w_in"),
        numpy_helper.from_array(weights.b_in, "b_in"),
        numpy_helper.from_array(weights.w_out, "w_out"),
        numpy_helper.from_array(np.array([0], np.int64), "lin_start"),
        numpy_helper.from_array(np.array([HORIZON], np.int64), "lin_end"),
        numpy_helper.from_array(np.array([HORIZON + hidden], np.int64), "hid_end"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
    ]
    nodes = [
        helper.make_node("MatMul", [ONNX_INPUT, "w_in"], ["xw"]),
        helper.make_node("Add", ["xw", "b_in"], ["z"]),
        helper.make_node("Slice", ["z", "lin_start", "lin_end", "axis"], ["linear"]),
        helper.make_node("Slice", ["z", "lin_end", "hid_end", "axis"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["activated"]),
        helper.make_node("MatMul", ["activated", "w_out"], ["correction"]),
        helper.make_node("Add", ["linear", "correction"], [ONNX_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "forecaster",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["batch", WINDOW])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["batch", HORIZON])],
        initializers,
    )
    # IR 9 / opset 17: within what the ONNX Runtime of SageMaker's Triton images (23.12 onwards) reads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return model.SerializeToString()


def torch_forecaster(weights: ForecasterWeights):
    """The same forecaster as a PyTorch module on normalised windows (benchmarks: the model called directly)."""
    import torch

    class Forecaster(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w_in = torch.nn.Parameter(torch.from_numpy(weights.w_in.copy()))
            self.b_in = torch.nn.Parameter(torch.from_numpy(weights.b_in.copy()))
            self.w_out = torch.nn.Parameter(torch.from_numpy(weights.w_out.copy()))

        def forward(self, window: torch.Tensor) -> torch.Tensor:
            z = window @ self.w_in + self.b_in
            return z[:, :HORIZON] + torch.relu(z[:, HORIZON:]) @ self.w_out

    return Forecaster().eval()


def _config(name: str, body: str) -> str:
    return f'name: "{name}"\n' + textwrap.dedent(body).strip() + "\n"


def repository_files(customer: str, weights: ForecasterWeights) -> dict[str, bytes]:
    """Path inside the archive -> content, for one customer's Triton model repository."""
    names = model_names(customer)
    stats = json.dumps({"mean": weights.mean, "std": weights.std}).encode()
    pre, onnx, post, ensemble = names["preprocess"], names["forecaster"], names["postprocess"], names["ensemble"]
    files = {
        f"{pre}/config.pbtxt": _config(
            pre,
            f"""
            backend: "python"
            max_batch_size: {MAX_BATCH}
            input [ {{ name: "{ENSEMBLE_INPUT}" data_type: TYPE_FP32 dims: [ {WINDOW} ] }} ]
            output [ {{ name: "WINDOW" data_type: TYPE_FP32 dims: [ {WINDOW} ] }} ]
            instance_group [ {{ kind: KIND_CPU count: 1 }} ]
            """,
        ),
        f"{pre}/1/model.py": _PREPROCESS.lstrip().encode(),
        f"{pre}/1/{NORMALISATION_FILE}": stats,
        f"{onnx}/config.pbtxt": _config(
            onnx,
            f"""
            platform: "onnxruntime_onnx"
            max_batch_size: {MAX_BATCH}
            input [ {{ name: "{ONNX_INPUT}" data_type: TYPE_FP32 dims: [ {WINDOW} ] }} ]
            output [ {{ name: "{ONNX_OUTPUT}" data_type: TYPE_FP32 dims: [ {HORIZON} ] }} ]
            instance_group [ {{ kind: KIND_GPU count: 1 }} ]
            dynamic_batching {{ max_queue_delay_microseconds: 100 }}
            """,
        ),
        f"{onnx}/1/model.onnx": onnx_model(weights),
        f"{post}/config.pbtxt": _config(
            post,
            f"""
            backend: "python"
            max_batch_size: {MAX_BATCH}
            input [ {{ name: "FORECAST_NORMALISED" data_type: TYPE_FP32 dims: [ {HORIZON} ] }} ]
            output [ {{ name: "{ENSEMBLE_OUTPUT}" data_type: TYPE_FP32 dims: [ {HORIZON} ] }} ]
            instance_group [ {{ kind: KIND_CPU count: 1 }} ]
            """,
        ),
        f"{post}/1/model.py": _POSTPROCESS.lstrip().encode(),
        f"{post}/1/{NORMALISATION_FILE}": stats,
        f"{ensemble}/config.pbtxt": _config(
            ensemble,
            f"""
            platform: "ensemble"
            max_batch_size: {MAX_BATCH}
            input [ {{ name: "{ENSEMBLE_INPUT}" data_type: TYPE_FP32 dims: [ {WINDOW} ] }} ]
            output [ {{ name: "{ENSEMBLE_OUTPUT}" data_type: TYPE_FP32 dims: [ {HORIZON} ] }} ]
            ensemble_scheduling {{ step [
              {{ model_name: "{pre}" model_version: -1
                input_map {{ key: "{ENSEMBLE_INPUT}" value: "{ENSEMBLE_INPUT}" }}
                output_map {{ key: "WINDOW" value: "normalised_window" }} }},
              {{ model_name: "{onnx}" model_version: -1
                input_map {{ key: "{ONNX_INPUT}" value: "normalised_window" }}
                output_map {{ key: "{ONNX_OUTPUT}" value: "normalised_forecast" }} }},
              {{ model_name: "{post}" model_version: -1
                input_map {{ key: "FORECAST_NORMALISED" value: "normalised_forecast" }}
                output_map {{ key: "{ENSEMBLE_OUTPUT}" value: "{ENSEMBLE_OUTPUT}" }} }}
            ] }}
            """,
        ),
        f"{ensemble}/1/.keep": b"",  # Triton wants a version directory, even for an ensemble
    }
    return {path: content.encode() if isinstance(content, str) else content for path, content in files.items()}


def pack(files: dict[str, bytes]) -> bytes:
    """A reproducible .tar.gz (sorted entries, fixed times and owners): the same model gives the same digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted({str(parent) for path in files for parent in Path(path).parents} - {"."}):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(files[path]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[path]))
    return gzip.compress(raw.getvalue(), mtime=0)


def customer_archive(customer: str, weights: ForecasterWeights | None = None) -> bytes:
    return pack(repository_files(customer, weights or ForecasterWeights.random(customer)))


def manifest_for(model_package_group: str, archives: dict[str, bytes]) -> Manifest:
    return Manifest(
        model_package_group,
        tuple(
            ArchiveEntry(customer, archive_name(customer), hashlib.sha256(data).hexdigest(), len(data))
            for customer, data in sorted(archives.items())
        ),
    )


def publish_version(s3, bucket: str, prefix: str, model_package_group: str, archives: dict[str, bytes]) -> str:
    """Upload a model version's archives and manifest under `prefix`; returns its model data URL."""
    prefix = prefix.rstrip("/") + "/"
    for customer, data in archives.items():
        s3.put_object(Bucket=bucket, Key=prefix + archive_name(customer), Body=data)
    s3.put_object(Bucket=bucket, Key=prefix + MANIFEST_NAME, Body=manifest_for(model_package_group, archives).to_json())
    return f"s3://{bucket}/{prefix}"
