"""Triton Python-backend model: raw readings -> the normalised, gap-filled window the ONNX forecaster takes.

The first step of the three-step ensemble ModelGate served before lean serving, kept as the serving bench's
baseline (bench/bench_inference.py). The customer's mean and standard deviation are the `mean` and `std`
parameters of that model's config.pbtxt. Runs inside Triton's Python stub,
so it uses only numpy and triton_python_backend_utils. The arithmetic mirrors pipelines/steps/forecaster.py
(`predict`, `fill_gaps`): float32 (x - mean) / std, then each gap takes the last reading before it; hours
before the first reading take the filled value of the same hour of the week in the first week that has a
reading, or 0 (the mean) when no such week is in the window.

Input READINGS FP32 [batch, WINDOW] (NaN marks a missing hour); output `window` FP32 [batch, WINDOW].
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

INPUT = "READINGS"
OUTPUT = "window"
WEEK = 7 * 24


def normalise(readings, mean, std, width):
    """Readings [batch, width] -> normalised, gap-filled windows; ValueError says what is wrong with a request."""
    x = np.asarray(readings, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"READINGS must have shape [batch, {width}], got {list(x.shape)}")
    if np.isinf(x).any():
        raise ValueError("READINGS must be finite numbers (NaN marks a missing hour)")
    empty = np.isnan(x).all(axis=1)
    if empty.any():
        raise ValueError(f"window {int(np.argmax(empty))} holds no reading at all: nothing to forecast from")
    z = (x - np.float32(mean)) / np.float32(std)
    hours = np.arange(width)
    positions = np.where(np.isnan(z), 0, hours)
    np.maximum.accumulate(positions, axis=1, out=positions)
    filled = np.take_along_axis(z, positions, axis=1)
    first = np.argmax(~np.isnan(z), axis=1)[:, None]  # every window has a reading (checked above)
    lead = hours < first
    source = np.where(lead, hours + WEEK * ((first - hours + WEEK - 1) // WEEK), hours)
    filled = np.take_along_axis(filled, np.minimum(source, width - 1), axis=1)
    filled[lead & (source >= width)] = 0.0
    return filled.astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config["parameters"]
        self.mean = np.float32(float(parameters["mean"]["string_value"]))
        self.std = np.float32(float(parameters["std"]["string_value"]))
        self.width = int(config["input"][0]["dims"][-1])

    def execute(self, requests):
        responses = []
        for request in requests:
            readings = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy()
            try:
                window = normalise(readings, self.mean, self.std, self.width)
            except ValueError as error:
                # INVALID_ARG: the caller's input is wrong, so Triton answers 400 (a plain TritonError is a 500).
                failure = pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=failure))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, window)]))
        return responses
