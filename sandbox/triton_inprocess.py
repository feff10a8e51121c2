"""Triton ensemble semantics in-process, for tests and as a fallback where no Triton server can run.

Reads a model repository the way Triton does (config.pbtxt parsed with Triton's own ModelConfig protobuf from
tritonclient), imports Python-backend `1/model.py` files with a minimal stand-in for
`triton_python_backend_utils`, runs ONNX models with onnxruntime, and wires an ensemble's steps through their
input/output maps. It does not emulate scheduling, batching limits or the network API: the real server does
that (see the serving sandbox); this checks the archive's files and arithmetic.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format, text_format

_counter = itertools.count()


def parse_config(path: Path):
    """A config.pbtxt as Triton's ModelConfig message (raises google.protobuf.text_format.ParseError)."""
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


class TritonError(Exception):
    # Error codes of the Python backend's TritonError (INVALID_ARG makes Triton answer 400, not 500).
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = UNKNOWN) -> None:
        super().__init__(message)
        self._code = code

    def message(self) -> str:
        return str(self)

    def code(self) -> int:
        return self._code


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceRequest:
    def __init__(self, inputs: list[Tensor]) -> None:
        self._inputs = inputs

    def inputs(self) -> list[Tensor]:
        return self._inputs


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
        self._outputs, self._error = output_tensors, error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def backend_utils() -> types.ModuleType:
    """A fresh `triton_python_backend_utils` stand-in module with the API the models use."""
    module = types.ModuleType("triton_python_backend_utils")
    for item in (
        TritonError,
        Tensor,
        InferenceRequest,
        InferenceResponse,
        get_input_tensor_by_name,
        get_output_tensor_by_name,
    ):
        setattr(module, item.__name__, item)
    return module


def config_json(config) -> str:
    """The model_config JSON Triton hands a Python model's initialize(): proto field names, int64 as numbers."""
    document = json_format.MessageToDict(config, preserving_proto_field_name=True)
    for tensor in document.get("input", []) + document.get("output", []):
        tensor["dims"] = [int(d) for d in tensor.get("dims", [])]
    return json.dumps(document)


class ModelFailedError(RuntimeError):
    """A model answered a request with an error (Triton would return it to the client)."""


@dataclass
class LoadedModel:
    config: Any
    runner: Any  # a TritonPythonModel, an onnxruntime session, or None for an ensemble

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.config.platform == "onnxruntime_onnx":
            names = [o.name for o in self.config.output]
            return dict(zip(names, self.runner.run(names, inputs), strict=True))
        request = InferenceRequest([Tensor(name, value) for name, value in inputs.items()])
        [response] = self.runner.execute([request])
        if response.has_error():
            raise ModelFailedError(f"{self.config.name}: {response.error().message()}")
        return {t.name(): t.as_numpy() for t in response.output_tensors()}


def load_model(directory: Path) -> LoadedModel:
    config = parse_config(directory / "config.pbtxt")
    if config.name != directory.name:
        raise ValueError(f"{directory}: config name {config.name!r} differs from the directory name")
    if config.platform == "ensemble":
        return LoadedModel(config, None)
    if config.platform == "onnxruntime_onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(directory / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        return LoadedModel(config, session)
    if config.backend == "python":
        name = f"_triton_model_{next(_counter)}"
        spec = importlib.util.spec_from_file_location(name, directory / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        previous = sys.modules.get("triton_python_backend_utils")
        sys.modules["triton_python_backend_utils"] = backend_utils()
        try:
            spec.loader.exec_module(module)
        finally:
            if previous is None:
                sys.modules.pop("triton_python_backend_utils", None)
            else:
                sys.modules["triton_python_backend_utils"] = previous
        model = module.TritonPythonModel()
        model.initialize({"model_config": config_json(config), "model_name": config.name, "model_version": "1"})
        return LoadedModel(config, model)
    raise ValueError(f"{directory}: unsupported platform/backend {config.platform or config.backend!r}")


class InvalidInferenceRequest(ValueError):
    """What Triton answers with 400 (INVALID_ARG): here an output name the model does not declare, or one named
    twice."""


class UnknownModel(LookupError):
    """What Triton answers with 404: a request for a model the repository does not hold."""


def requested_outputs(config, outputs: Sequence[str] | None) -> list[str]:
    """The outputs a KServe v2 request gets: the ones it names (`outputs`, in its order), or every declared output
    when it names none. Triton refuses a name the model does not declare, and one named twice."""
    declared = [output.name for output in config.output]
    if not outputs:
        return declared
    for name in outputs:
        if name not in declared:
            raise InvalidInferenceRequest(f"unexpected inference output '{name}' for model '{config.name}'")
    duplicated = sorted({name for name in outputs if list(outputs).count(name) > 1})
    if duplicated:
        raise InvalidInferenceRequest(f"output '{duplicated[0]}' already exists in request to model '{config.name}'")
    return list(outputs)


class Repository:
    """Every model of one unpacked repository directory."""

    def __init__(self, root: Path) -> None:
        self.models = {d.name: load_model(d) for d in sorted(root.iterdir()) if (d / "config.pbtxt").is_file()}

    def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The model's answer: only the `outputs` named (KServe v2 request `outputs`), all declared ones if none."""
        if model not in self.models:
            raise UnknownModel(f"Request for unknown model: '{model}' is not found")
        loaded = self.models[model]
        wanted = requested_outputs(loaded.config, outputs)
        if loaded.config.platform != "ensemble":
            answer = loaded.infer(inputs)
            return {name: answer[name] for name in wanted}
        tensors = dict(inputs)
        for step in loaded.config.ensemble_scheduling.step:
            answer = self.infer(step.model_name, {key: tensors[value] for key, value in step.input_map.items()})
            tensors.update({value: answer[key] for key, value in step.output_map.items()})
        return {name: tensors[name] for name in wanted}
