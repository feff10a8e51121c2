"""Triton Python-backend model that runs an ONNX file with onnxruntime on the CPU.

Copied by sandbox/triton_repository.py into the local copy of every ONNX Runtime model (never into archives):
the local CPU Triton has no ONNX Runtime backend. Inputs and outputs are those of the model's config.pbtxt,
the ONNX file is named by its MODELGATE_ONNX_FILE parameter. Runs inside Triton's Python stub, so it imports
only numpy, onnxruntime and the backend's utilities.
"""

import json
import os

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config["parameters"]["MODELGATE_ONNX_FILE"]["string_value"]
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # Triton runs instances side by side; one thread each
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]
        self.output_types = {
            tensor["name"]: pb_utils.triton_string_to_numpy(tensor["data_type"]) for tensor in config["output"]
        }

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
                results = self.session.run(self.outputs, feeds)
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value, dtype=self.output_types[name]))
                    for name, value in zip(self.outputs, results, strict=True)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as error:  # one bad request must not fail the others of the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
        return responses
