"""Each customer's served model as ONE ONNX graph: READINGS FP32 [batch, WINDOW] (raw readings, NaN = gap) ->
FORECAST FP32 [batch, HORIZON] (reading units): normalisation, gap filling, the forecaster and the inverse
transform of pipelines/steps/forecaster.py `predict`, the function evaluation scores. No Python-backend step:
at concurrency 1 those hops were nearly all of a request's time (bench/RESULTS.md, lean serving).

The forecaster core (`window` -> `forecast`, normalised units) is traced ONCE by torch.onnx.export (the dynamo
exporter) from `CustomerForecaster`; the gap filling and the transforms around it are written here in plain ONNX
operators (torch's `cummax` has no ONNX counterpart: the forward fill's running maximum is a log-step scan).
Every customer's model is that graph with the customer's weights, mean and std as initializers: exporting 10,000
times would take hours for the same graph; swapping initializers takes milliseconds, and `verify` runs the result
in onnxruntime against `forecaster.predict` on windows with gaps, so what is served is what was evaluated.

`with_intervals` adds FORECAST_P10 and FORECAST_P90 after FORECAST (the P50): a few element-wise nodes on the
customer's interval offsets (pipelines/steps/quantiles.py), also initializers, also checked by `verify`.

A row with no reading, or with an infinite one, has nothing to forecast from: its output rows are NaN (the
inference API refuses such rows with 400 before the endpoint is called: modelgate/serving/protocol.py).
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
from onnx import TensorProto, helper, numpy_helper

from modelgate.model_repository import (
    ENSEMBLE_INPUT,
    ENSEMBLE_OUTPUT,
    ENSEMBLE_P10,
    ENSEMBLE_P90,
    HORIZON,
    ONNX_INPUT,
    ONNX_OUTPUT,
    WINDOW,
)
from pipelines.steps import quantiles
from pipelines.steps.forecaster import WEEK, CustomerForecaster, ForecasterParameters, predict

OPSET = 18
IR_VERSION = 9
WEIGHTS = ("w_in", "b_in", "w_out")
INTERVALS = ("interval_low", "interval_high", "interval_floor")  # with_intervals' initializers


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


def served_template(core: onnx.ModelProto) -> onnx.ModelProto:
    """READINGS -> FORECAST around the traced `core` (window -> forecast), with placeholder mean and std.

    Mirrors forecaster.predict / fill_gaps step by step: z = (x - mean) / std; each gap takes the last reading
    before it (running maximum of the observed positions, by a log-step scan); hours before the first reading
    take the filled value of the same hour of the week in the first week that has one, or 0 where none does;
    forecast = core(window) * std + mean. Gathers pick the same elements as torch's, so only the matrix
    products' summation order can differ from the reference."""
    nodes: list[onnx.NodeProto] = []
    consts: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.zeros((), np.float32), "mean"),
        numpy_helper.from_array(np.ones((), np.float32), "std"),
    ]

    def const(name: str, value) -> str:
        consts.append(numpy_helper.from_array(np.asarray(value), f"mg_{name}"))
        return f"mg_{name}"

    def node(op: str, inputs: list[str], output: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [f"mg_{output}"], name=f"mg_{output}", **attributes))
        return f"mg_{output}"

    # Index arithmetic in float32 (exact for integers this small): onnxruntime's CPU kernels vectorise float
    # Max/Where/Floor, not int64 ones, which made gap filling ten times the forecaster's cost at 64 windows.
    x = ENSEMBLE_INPUT
    hours = const("hours", np.arange(WINDOW, dtype=np.float32)[None, :])
    zero_f = const("zero_f", np.float32(0))
    axis1 = const("axis1", np.array([1], np.int64))
    z = node("Div", [node("Sub", [x, "mean"], "centred"), "std"], "z")
    observed = node("Not", [node("IsNaN", [z], "gap")], "observed")
    last_seen = node("Where", [observed, hours, zero_f], "seen_0")
    shift = 1
    while shift < WINDOW:  # running maximum: after step k, each hour holds the max over the 2^k hours up to it
        padded = node("Pad", [last_seen, const(f"pads_{shift}", np.array([0, shift, 0, 0], np.int64))], f"pad_{shift}")
        earlier = node(
            "Slice", [padded, const(f"from_{shift}", [0]), const(f"to_{shift}", [WINDOW]), axis1], f"earlier_{shift}"
        )
        last_seen = node("Max", [last_seen, earlier], f"seen_{shift}")
        shift *= 2
    last_index = node("Cast", [last_seen], "last_index", to=TensorProto.INT64)
    carried = node("GatherElements", [z, last_index], "carried", axis=1)
    observed_f = node("Cast", [observed], "observed_f", to=TensorProto.FLOAT)
    first = node("Cast", [node("ArgMax", [observed_f], "first_i", axis=1, keepdims=1)], "first", to=TensorProto.FLOAT)
    lead = node("Less", [hours, first], "lead")  # before the first reading (none for a row without one)
    # floor((first - h + WEEK - 1) / WEEK): the weeks to move ahead to reach a reading's week.
    ahead = node("Add", [node("Sub", [first, hours], "ahead"), const("week_1", np.float32(WEEK - 1))], "ahead_1")
    weeks_ahead = node("Floor", [node("Div", [ahead, const("week", np.float32(WEEK))], "weeks")], "weeks_ahead")
    same_hour = node("Add", [hours, node("Mul", [weeks_ahead, const("week_m", np.float32(WEEK))], "shift")], "same")
    source = node("Where", [lead, same_hour, hours], "source")
    inside = node("Min", [source, const("last_hour", np.float32(WINDOW - 1))], "inside")
    filled = node(
        "GatherElements", [carried, node("Cast", [inside], "inside_i", to=TensorProto.INT64)], "filled", axis=1
    )
    beyond = node("And", [lead, node("GreaterOrEqual", [source, const("width", np.float32(WINDOW))], "past")], "beyond")
    window = node("Where", [beyond, zero_f, filled], "window")
    # A row without a reading stays NaN through here (z is NaN everywhere); the output masks it anyway.
    nodes.extend(_renamed(n, {ONNX_INPUT: window, ONNX_OUTPUT: "mg_core_forecast"}) for n in core.graph.node)
    scaled = node("Add", [node("Mul", ["mg_core_forecast", "std"], "scaled"), "mean"], "forecast")
    any_reading = node("ReduceMax", [observed_f, axis1], "any_reading", keepdims=1)
    infinite_f = node("Cast", [node("IsInf", [x], "inf")], "inf_f", to=TensorProto.FLOAT)
    infinite = node("ReduceMax", [infinite_f, axis1], "any_inf", keepdims=1)
    empty = node("Equal", [any_reading, zero_f], "empty")
    refused = node("Or", [empty, node("Greater", [infinite, zero_f], "has_inf")], "refused")
    nan = const("nan", np.float32(np.nan))
    nodes.append(helper.make_node("Where", [refused, nan, scaled], [ENSEMBLE_OUTPUT], name="mg_output"))

    graph = helper.make_graph(
        nodes,
        "modelgate_forecaster",
        [helper.make_tensor_value_info(ENSEMBLE_INPUT, TensorProto.FLOAT, ["batch", WINDOW])],
        [helper.make_tensor_value_info(ENSEMBLE_OUTPUT, TensorProto.FLOAT, ["batch", HORIZON])],
        initializer=list(core.graph.initializer) + consts,
    )
    model = helper.make_model(graph, opset_imports=list(core.opset_import), producer_name="modelgate")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _renamed(original: onnx.NodeProto, names: dict[str, str]) -> onnx.NodeProto:
    node = onnx.NodeProto()
    node.CopyFrom(original)
    node.input[:] = [names.get(name, name) for name in node.input]
    node.output[:] = [names.get(name, name) for name in node.output]
    del node.metadata_props[:]
    return node


def with_intervals(served: onnx.ModelProto) -> onnx.ModelProto:
    """`served` (READINGS -> FORECAST) with two more outputs computed from FORECAST, the P50, and the customer's
    interval offsets held as initializers (placeholders here, set by `customer_model`): pipelines/steps/quantiles.py
    `bounds`, FORECAST_P{10,90} = FORECAST + interval_{low,high} * max(|FORECAST|, interval_floor). A NaN
    FORECAST row stays NaN in both. Added after the served graph's output, so the forecast itself is untouched."""
    model = onnx.ModelProto()
    model.CopyFrom(served)
    graph = model.graph
    if [o.name for o in graph.output] != [ENSEMBLE_OUTPUT]:
        raise OnnxExportError(f"with_intervals needs a served graph with one output {ENSEMBLE_OUTPUT}")
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros(HORIZON, np.float32), INTERVALS[0]),
            numpy_helper.from_array(np.zeros(HORIZON, np.float32), INTERVALS[1]),
            numpy_helper.from_array(np.ones((), np.float32), INTERVALS[2]),
        ]
    )
    size = helper.make_node("Abs", [ENSEMBLE_OUTPUT], ["mg_p50_abs"], name="mg_p50_abs")
    scale = helper.make_node("Max", ["mg_p50_abs", INTERVALS[2]], ["mg_interval_scale"], name="mg_interval_scale")
    graph.node.extend([size, scale])
    for output, offsets in ((ENSEMBLE_P10, INTERVALS[0]), (ENSEMBLE_P90, INTERVALS[1])):
        step = f"mg_{output.lower()}_step"
        graph.node.extend(
            [
                helper.make_node("Mul", [offsets, "mg_interval_scale"], [step], name=step),
                helper.make_node("Add", [ENSEMBLE_OUTPUT, step], [output], name=f"mg_{output.lower()}"),
            ]
        )
        graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", HORIZON]))
    onnx.checker.check_model(model, full_check=True)
    return model


def customer_model(
    template: onnx.ModelProto,
    params: ForecasterParameters,
    index: int,
    mean: float | None = None,
    std: float | None = None,
    intervals: quantiles.Intervals | None = None,
) -> bytes:
    """Serialized ONNX model of customer `index` of `params` (the template is left unchanged). A served template
    (`served_template`) needs the customer's mean and std; the bare core (`export_template`) takes none; one
    `with_intervals` needs the customers' `intervals` too (row `index` is this customer's)."""
    weights = {
        "w_in": params.w_in[index].detach().cpu().numpy(),
        "b_in": params.b_in[index, 0].detach().cpu().numpy(),
        "w_out": params.w_out[index].detach().cpu().numpy(),
    }
    served = any(init.name == "mean" for init in template.graph.initializer)
    if served != (mean is not None and std is not None):
        raise OnnxExportError("a served template needs the customer's mean and std; a bare core takes neither")
    if served:
        weights |= {"mean": np.float32(mean), "std": np.float32(std)}
    with_bounds = any(init.name == INTERVALS[0] for init in template.graph.initializer)
    if with_bounds != (intervals is not None):
        raise OnnxExportError(
            "a template with intervals needs the customer's interval offsets (pipelines/steps/quantiles.py: the"
            " training step estimates them); one without takes none"
        )
    if with_bounds:
        own = (intervals.low[index].numpy(), intervals.high[index].numpy(), np.float32(intervals.floor[index]))
        weights |= dict(zip(INTERVALS, own, strict=True))
    model = onnx.ModelProto()
    model.CopyFrom(template)
    for initializer in model.graph.initializer:
        if initializer.name in weights:
            array = np.asarray(weights[initializer.name], np.float32)
            initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))
    return model.SerializeToString()


def windows_with_gaps(rng: np.random.Generator, mean: float, std: float, count: int = 8) -> np.ndarray:
    """Readings around (mean, std) with every kind of gap serving sees: leading (a short history), inside, at
    the end, every other hour, whole weeks missing."""
    readings = (mean + std * rng.normal(size=(count, WINDOW))).astype(np.float32)
    patterns = [
        lambda r: r.__setitem__(slice(0, 5), np.nan),
        lambda r: r.__setitem__(slice(50, 80), np.nan),
        lambda r: r.__setitem__(-1, np.nan),
        lambda r: r.__setitem__(slice(None, None, 2), np.nan),
        lambda r: r.__setitem__(slice(0, WINDOW - 200), np.nan),  # the weeks before take a later week's hour
        lambda r: r.__setitem__(slice(0, WINDOW - 30), np.nan),  # less than a week: hours left at the mean
        lambda r: r.__setitem__(slice(168, 2 * 168), np.nan),
    ]
    for row, pattern in zip(readings, patterns, strict=False):
        pattern(row)
    return readings


def verify(
    model: bytes,
    params: ForecasterParameters,
    index: int,
    rng: np.random.Generator,
    mean: float | None = None,
    std: float | None = None,
    intervals: quantiles.Intervals | None = None,
) -> float:
    """Max |onnxruntime - PyTorch| on windows; raises when above tolerance. A served model is compared with
    forecaster.predict (what evaluation scores) with the trained `mean` and `std` on readings with gaps, and
    must answer NaN for a row without a reading; a bare core with CustomerForecaster on normalised windows. A
    served model with intervals must also give quantiles.bounds of that forecast with the customer's
    `intervals` (evaluation's P10/P90), in order P10 <= FORECAST <= P90, NaN where FORECAST is."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    served = session.get_inputs()[0].name == ENSEMBLE_INPUT
    outputs = [o.name for o in session.get_outputs()]
    if served:
        if mean is None or std is None:
            raise OnnxExportError("verifying a served model needs the customer's trained mean and std")
        if (ENSEMBLE_P10 in outputs) != (intervals is not None):
            raise OnnxExportError(f"the served model's outputs are {outputs}; verify them with intervals iff it has")
        windows = windows_with_gaps(rng, mean, std)
        empty = np.full((1, WINDOW), np.nan, np.float32)
        answers = session.run(outputs, {ENSEMBLE_INPUT: np.concatenate([windows, empty])})
        results = dict(zip(outputs, answers, strict=True))
        if not all(np.isnan(result[-1]).all() for result in results.values()):
            raise OnnxExportError("the served model forecasts a window that holds no reading")
        got = results[ENSEMBLE_OUTPUT][:-1]
        one = params.select(slice(index, index + 1))
        expected = predict(one, torch.from_numpy(windows)[None], torch.tensor([mean]), torch.tensor([std]))[0].numpy()
        scale = std
        pairs = [(got, expected)]
        if intervals is not None:
            own = (intervals.low[index].numpy(), intervals.high[index].numpy(), intervals.floor[index].numpy())
            low, high = quantiles.bounds(expected, *own)
            p10, p90 = results[ENSEMBLE_P10][:-1], results[ENSEMBLE_P90][:-1]
            if not ((p10 <= got) & (got <= p90)).all():
                raise OnnxExportError("the served model's quantiles are out of order (P10 <= FORECAST <= P90)")
            pairs += [(p10, low), (p90, high)]
    else:
        windows = rng.normal(size=(4, WINDOW)).astype(np.float32)
        (got,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: windows})
        with torch.no_grad():
            expected = CustomerForecaster(params, index)(torch.from_numpy(windows)).numpy()
        scale = 1.0
        pairs = [(got, expected)]
    if got.shape != (len(windows), HORIZON):
        raise OnnxExportError(f"ONNX model returned shape {got.shape}, expected ({len(windows)}, {HORIZON})")
    error = max(float(np.abs(value - reference).max()) for value, reference in pairs)
    if not error <= 1e-4 * max(scale, max(float(np.abs(reference).max()) for _, reference in pairs)):
        raise OnnxExportError(f"ONNX model differs from PyTorch by {error}")
    return error
