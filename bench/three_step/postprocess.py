"""Triton Python-backend model: the ONNX forecaster's normalised forecast -> forecast in reading units (kWh).

The last step of the three-step ensemble served before lean serving, kept as the serving bench's baseline
(bench/bench_inference.py), with the customer's `mean` and `std` as config.pbtxt parameters. Only numpy and
triton_python_backend_utils (it runs inside Triton's Python stub).
Mirrors pipelines/steps/forecaster.py `predict`: float32 forecast * std + mean.

Input `forecast` FP32 [batch, HORIZON]; output FORECAST FP32 [batch, HORIZON].
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

INPUT = "forecast"
OUTPUT = "FORECAST"


def denormalise(forecast, mean, std):
    return (np.asarray(forecast, dtype=np.float32) * np.float32(std) + np.float32(mean)).astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.mean = np.float32(float(parameters["mean"]["string_value"]))
        self.std = np.float32(float(parameters["std"]["string_value"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            forecast = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy()
            output = pb_utils.Tensor(OUTPUT, denormalise(forecast, self.mean, self.std))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
