"""Each customer's forecaster as an ONNX model: `window` FP32 [batch, WINDOW] -> `forecast` FP32 [batch, HORIZON]
(modelgate.model_repository ONNX_INPUT/ONNX_OUTPUT), normalised units.

torch.onnx.export (the dynamo exporter) traces the architecture ONCE; every customer's model is that graph with
the customer's weights as initializers. Exporting 10,000 times would take hours for the same graph; swapping
initializers takes milliseconds, and `verify` runs the result in onnxruntime against PyTorch.
Opset 18 and IR version 9: loadable by the onnxruntime of every SageMaker Triton release ModelGate allows
(23.12 ships onnxruntime 1.16).
"""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stdout

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from modelgate.model_repository import HORIZON, ONNX_INPUT, ONNX_OUTPUT, WINDOW
from pipelines.steps.forecaster import CustomerForecaster, ForecasterParameters

OPSET = 18
IR_VERSION = 9
WEIGHTS = ("w_in", "b_in", "w_out")


class OnnxExportError(RuntimeError):
    pass


def export_template(hidden: int) -> onnx.ModelProto:
    """The architecture for `hidden` units, traced once, with placeholder weights."""
    keys = torch.zeros(1, dtype=torch.int64)
    module = CustomerForecaster(ForecasterParameters.initial(keys, hidden, torch.device("cpu")), 0).eval()
    example = (torch.zeros(2, WINDOW),)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # The exporter narrates its passes on stdout and warns about its own internals: neither is ours to act on.
    with redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes={"window": {0: torch.export.Dim("batch")}},
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    proto.ir_version = IR_VERSION
    # The weights must survive as initializers named after the parameters (the graph's other initializers are
    # the slicing constants); anything else means the exporter folded them and swapping would be wrong.
    found = {init.name: tuple(init.dims) for init in proto.graph.initializer if init.name in WEIGHTS}
    expected = {name: tuple(getattr(module, name).shape) for name in WEIGHTS}
    if found != expected:
        raise OnnxExportError(f"exported weight initializers {found}, expected {expected}")
    onnx.checker.check_model(proto)
    return proto


def customer_model(template: onnx.ModelProto, params: ForecasterParameters, index: int) -> bytes:
    """Serialized ONNX model of customer `index` of `params` (the template is left unchanged)."""
    weights = {
        "w_in": params.w_in[index],
        "b_in": params.b_in[index, 0],
        "w_out": params.w_out[index],
    }
    model = onnx.ModelProto()
    model.CopyFrom(template)
    for initializer in model.graph.initializer:
        if initializer.name not in weights:
            continue
        array = weights[initializer.name].detach().cpu().numpy().astype(np.float32)
        initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))
    return model.SerializeToString()


def verify(model: bytes, params: ForecasterParameters, index: int, rng: np.random.Generator) -> float:
    """Max |onnxruntime - PyTorch| on random windows; raises when above tolerance."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    windows = rng.normal(size=(4, WINDOW)).astype(np.float32)
    (got,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: windows})
    with torch.no_grad():
        expected = CustomerForecaster(params, index)(torch.from_numpy(windows)).numpy()
    if got.shape != (4, HORIZON):
        raise OnnxExportError(f"ONNX model returned shape {got.shape}, expected (4, {HORIZON})")
    error = float(np.abs(got - expected).max())
    if error > 1e-4 * max(1.0, float(np.abs(expected).max())):
        raise OnnxExportError(f"ONNX model differs from PyTorch by {error}")
    return error
