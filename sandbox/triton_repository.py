"""Put a model archive (exactly as deployed to SageMaker) into the local Triton's model repository.

The archives carry ONNX models configured for Triton's ONNX Runtime backend (`platform: "onnxruntime_onnx"`,
often `KIND_GPU`), which is what SageMaker's Triton image runs. The CPU Triton of the nvidia-pytriton wheel has
no ONNX Runtime backend, so only the *local copy* of such a model is rewritten: same name, inputs, outputs,
batching and files, but `backend: "python"` with a small runner (`onnx_runner_model.py`) that executes the same
model.onnx with onnxruntime on the CPU. Python-backend and ensemble models are copied as they are. The archive
itself is never changed, so what is tested here is what deploys.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

CONFIG = "config.pbtxt"
ONNX_PLATFORMS = ("onnxruntime_onnx",)
ONNX_BACKENDS = ("onnxruntime",)
RUNNER_SOURCE = Path(__file__).with_name("onnx_runner_model.py")
ONNX_FILE_PARAMETER = "MODELGATE_ONNX_FILE"


class ArchiveError(ValueError):
    """The archive is not a Triton model repository this stand-in can load."""


@dataclass(frozen=True)
class LocalModels:
    names: tuple[str, ...]  # every model directory of the archive
    entry: str  # the model requests go to: the ensemble, or the archive's only model
    substituted: tuple[str, ...]  # ONNX Runtime models now run by the Python runner


def read_config(path: Path) -> mc.ModelConfig:
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as error:
        raise ArchiveError(f"{path}: not a Triton model configuration: {error}") from None


def extract(archive: bytes, into: Path) -> Path:
    """Extract safely (no absolute paths, links out or devices) and return the repository root inside."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArchiveError(f"not a readable .tar.gz model archive: {error}") from None
    # Models at the archive root (SageMaker's layout), or all inside one top-level folder.
    if any((child / CONFIG).is_file() for child in into.iterdir() if child.is_dir()):
        return into
    children = [child for child in into.iterdir() if child.is_dir()]
    if len(children) == 1 and any((grand / CONFIG).is_file() for grand in children[0].iterdir() if grand.is_dir()):
        return children[0]
    raise ArchiveError("the archive holds no model directory with a config.pbtxt")


def _substitute_onnx(model_dir: Path, config: mc.ModelConfig) -> None:
    """Rewrite the local copy of an ONNX Runtime model to run under the Python backend with onnxruntime."""
    filename = config.default_model_filename or "model.onnx"
    versions = [d for d in model_dir.iterdir() if d.is_dir() and d.name.isdigit() and (d / filename).is_file()]
    if not versions:
        raise ArchiveError(f"{model_dir.name}: no <version>/{filename} for its ONNX Runtime configuration")
    config.platform = ""
    config.backend = "python"
    config.default_model_filename = ""
    config.ClearField("optimization")  # ONNX Runtime / TensorRT accelerators mean nothing to the Python backend
    config.parameters[ONNX_FILE_PARAMETER].string_value = filename
    for group in config.instance_group:
        if group.kind in (mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO):
            group.kind = mc.ModelInstanceGroup.KIND_CPU
            group.ClearField("gpus")
    for version in versions:
        shutil.copy2(RUNNER_SOURCE, version / "model.py")
    (model_dir / CONFIG).write_text(text_format.MessageToString(config))


def localize(source_root: Path, repository: Path, namespace: str = "") -> LocalModels:
    """Copy every model of an extracted archive into `repository` (replacing same-named models), ONNX substituted.

    `namespace` prefixes every model name (and the ensemble's steps): several endpoints share one local Triton,
    while on SageMaker each endpoint has its own container, so two groups' archives may use the same names."""
    names, substituted, ensembles = [], [], []
    for model_dir in sorted(d for d in source_root.iterdir() if d.is_dir() and (d / CONFIG).is_file()):
        config = read_config(model_dir / CONFIG)
        original = config.name or model_dir.name
        if original != model_dir.name:
            raise ArchiveError(f"model directory {model_dir.name!r} declares name {config.name!r}")
        name = namespace + original
        destination = repository / name
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(model_dir, destination)
        if namespace:
            config.name = name
            for step in config.ensemble_scheduling.step:
                step.model_name = namespace + step.model_name
        if config.platform in ONNX_PLATFORMS or config.backend in ONNX_BACKENDS:
            _substitute_onnx(destination, config)
            substituted.append(name)
        elif namespace:
            (destination / CONFIG).write_text(text_format.MessageToString(config))
        if config.platform == "ensemble":
            ensembles.append(name)
        names.append(name)
    if not names:
        raise ArchiveError("the archive holds no model directory with a config.pbtxt")
    if len(ensembles) > 1:
        raise ArchiveError(f"the archive holds {len(ensembles)} ensembles ({', '.join(ensembles)}); expected one")
    if not ensembles and len(names) > 1:
        raise ArchiveError(f"the archive holds {len(names)} models and no ensemble to call")
    entry = ensembles[0] if ensembles else names[0]
    return LocalModels(tuple(names), entry, tuple(substituted))
