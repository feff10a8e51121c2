"""Local inference: one customer's Triton ensemble (real Triton on the CPU) before and after lean serving, and
the same PyTorch model called directly, per request of 1 window and of 64 windows (the archive's batch limit).

Built in this run from the same weights:
- lean: the pipeline's packaged archive, one ONNX graph (normalisation, gap filling, forecaster, inverse
  transform, and the P10/P90 quantiles) behind a one-step ensemble (pipelines/packaging);
- point-only: the same graph without the quantile outputs (FORECAST alone), to measure what they cost;
- three-step (the baseline, ModelGate's previous layout): Python-backend preprocess -> ONNX forecaster ->
  Python-backend postprocess (bench/three_step/), each hop an IPC round trip to a Python stub.
Clients, measured interleaved:
- Triton's own client (tritonclient.http): binary tensors, one kept-alive connection per caller;
- the previous bench client: KServe v2 JSON, a new connection per request (what it cost is shown, not hidden);
- through the SageMaker MME stand-in via boto3 `invoke_endpoint` (what the invoke Lambda does), lean only.
No GPU is lent to this task's machines, so there are no GPU Triton figures here (see bench/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import BenchResult
from modelgate.model_repository import (
    ENSEMBLE_INPUT,
    ENSEMBLE_OUTPUT,
    ENSEMBLE_OUTPUTS,
    HORIZON,
    MAX_BATCH_SIZE,
    ONNX_INPUT,
    ONNX_OUTPUT,
    WINDOW,
    model_names,
    target_model,
)

TARGET = 0.8  # lean / three-step p50 at 1 window, binary keep-alive client: the two Python hops were most of it
CUSTOMER = "bench-customer"
BASELINE = "bench-three-step"  # the same weights, in the previous three-step layout
POINT_ONLY = "bench-point-only"  # the same weights, the lean graph without FORECAST_P10/P90
THREE_STEP_SOURCES = Path(__file__).resolve().parent / "three_step"


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def _request(values: np.ndarray) -> bytes:
    tensor = {"name": ENSEMBLE_INPUT, "shape": list(values.shape), "datatype": "FP32", "data": values.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def _time(call, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _throughput(make_call, threads: int, seconds: float) -> float:
    """Requests per second with `threads` concurrent callers (each its own `make_call()`) for `seconds`."""
    calls = [make_call() for _ in range(threads)]
    done, stop = [0] * threads, time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < stop:
            calls[index]()
            done[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


# ---- the baseline: the previous three-step layout, from the same weights -----------------------------------


def _tensor(name: str, width: int) -> str:
    return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {width} ] }}'


def _python_config(name: str, inputs: tuple[str, int], outputs: tuple[str, int], mean: float, std: float) -> str:
    parameters = "\n".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{float(np.float32(value))!r}" }} }}'
        for key, value in (("mean", mean), ("std", std))
    )
    return f"""name: "{name}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [
{_tensor(*inputs)}
]
output [
{_tensor(*outputs)}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{parameters}
"""


def three_step_files(customer: str, core_onnx: bytes, mean: float, std: float) -> dict[str, bytes]:
    """preprocess (Python) -> forecaster (ONNX core, normalised units) -> postprocess (Python), as served before."""
    base = model_names(customer)["ensemble"]
    pre, core, post = f"{base}_preprocess", f"{base}_forecaster", f"{base}_postprocess"

    def step(model: str, source: tuple[str, str], target: tuple[str, str]) -> str:
        return (
            f'    {{ model_name: "{model}" model_version: -1\n'
            f'      input_map {{ key: "{source[0]}" value: "{source[1]}" }}\n'
            f'      output_map {{ key: "{target[0]}" value: "{target[1]}" }} }}'
        )

    steps = ",\n".join(
        [
            step(pre, (ENSEMBLE_INPUT, ENSEMBLE_INPUT), (ONNX_INPUT, "normalised_window")),
            step(core, (ONNX_INPUT, "normalised_window"), (ONNX_OUTPUT, "normalised_forecast")),
            step(post, (ONNX_OUTPUT, "normalised_forecast"), (ENSEMBLE_OUTPUT, ENSEMBLE_OUTPUT)),
        ]
    )
    ensemble = f"""name: "{base}"
platform: "ensemble"
max_batch_size: {MAX_BATCH_SIZE}
input [
{_tensor(ENSEMBLE_INPUT, WINDOW)}
]
output [
{_tensor(ENSEMBLE_OUTPUT, HORIZON)}
]
ensemble_scheduling {{
  step [
{steps}
  ]
}}
"""
    forecaster = f"""name: "{core}"
platform: "onnxruntime_onnx"
max_batch_size: {MAX_BATCH_SIZE}
input [
{_tensor(ONNX_INPUT, WINDOW)}
]
output [
{_tensor(ONNX_OUTPUT, HORIZON)}
]
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
"""
    pre_config = _python_config(pre, (ENSEMBLE_INPUT, WINDOW), (ONNX_INPUT, WINDOW), mean, std)
    post_config = _python_config(post, (ONNX_OUTPUT, HORIZON), (ENSEMBLE_OUTPUT, HORIZON), mean, std)
    return {
        f"{pre}/config.pbtxt": pre_config.encode(),
        f"{pre}/1/model.py": (THREE_STEP_SOURCES / "preprocess.py").read_bytes(),
        f"{core}/config.pbtxt": forecaster.encode(),
        f"{core}/1/model.onnx": core_onnx,
        f"{post}/config.pbtxt": post_config.encode(),
        f"{post}/1/model.py": (THREE_STEP_SOURCES / "postprocess.py").read_bytes(),
        f"{base}/config.pbtxt": ensemble.encode(),
        f"{base}/1/": b"",
    }


def _archives(hidden: int):
    """(reference, {customer: archive}): the lean archive and the three-step one, from the same weights."""
    from pipelines.packaging import onnx_export
    from pipelines.packaging.triton_repository import pack, repository_files
    from sandbox.model_archives import example_version

    version = example_version([CUSTOMER], hidden=hidden)
    models = version.models
    template = onnx_export.export_template(hidden)
    core = onnx_export.customer_model(template, models.params, 0)
    mean, std = float(models.mean[0]), float(models.std[0])
    baseline = three_step_files(BASELINE, core, mean, std)
    point = onnx_export.customer_model(onnx_export.served_template(template), models.params, 0, mean, std)
    point_only = repository_files(POINT_ONLY, point, outputs=(ENSEMBLE_OUTPUT,))
    return version, {CUSTOMER: version.archives[CUSTOMER], BASELINE: pack(baseline), POINT_ONLY: pack(point_only)}


def _graph_alone(archive: bytes, windows: np.ndarray, customer: str = CUSTOMER, outputs=(ENSEMBLE_OUTPUT,)):
    """An archive's ONNX graph run in this process (onnxruntime, one thread): the arithmetic alone."""
    import io
    import tarfile

    import onnxruntime

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        model = tar.extractfile(f"{model_names(customer)['forecaster']}/1/model.onnx").read()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return lambda: session.run(list(outputs), {ENSEMBLE_INPUT: windows})[0]


def run(quick: bool = False) -> BenchResult:
    import boto3
    import torch
    import tritonclient.http as httpclient

    from sandbox.multi_model_endpoint import DirectoryArchives, LocalMultiModelEndpoint
    from sandbox.triton import LocalTriton

    repeats, seconds = (100, 2.0) if quick else (400, 5.0)
    torch.set_num_threads(1)  # like one Triton model instance
    version, archives = _archives(hidden=16)
    rng = np.random.default_rng(0)
    windows = {n: rng.uniform(0.5, 5.0, (n, WINDOW)).astype(np.float32) for n in (1, MAX_BATCH_SIZE)}
    for values in windows.values():
        values[:, 100:104] = np.nan  # a gap, so gap filling is part of the work
    bodies = {n: _request(values) for n, values in windows.items()}

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "archives" / "v1"
        directory.mkdir(parents=True)
        for customer, archive in archives.items():
            (directory / f"{customer}.tar.gz").write_bytes(archive)
        with (
            LocalTriton(Path(scratch) / "triton") as triton,
            LocalMultiModelEndpoint(triton, DirectoryArchives(directory.parent)) as endpoint,
        ):
            runtime = boto3.client(
                "sagemaker-runtime",
                endpoint_url=endpoint.url,
                region_name="eu-west-1",
                aws_access_key_id="local",
                aws_secret_access_key=os.urandom(8).hex(),
            )
            for customer in archives:  # the first MME call loads the archive into Triton
                runtime.invoke_endpoint(
                    EndpointName=endpoint.endpoint_name,
                    TargetModel=target_model(1, customer),
                    ContentType="application/json",
                    Body=bodies[1],
                )["Body"].read()
            # Each endpoint loads its models under its own prefix in the shared local Triton.
            served = {
                "lean": endpoint.namespace + model_names(CUSTOMER)["ensemble"],
                "three-step": endpoint.namespace + model_names(BASELINE)["ensemble"],
                "point-only": endpoint.namespace + model_names(POINT_ONLY)["ensemble"],
            }
            host = triton.url.removeprefix("http://")

            def pytorch(n: int):
                return lambda: version.reference(CUSTOMER, windows[n])

            def binary(layout: str, n: int, outputs: tuple[str, ...] = (ENSEMBLE_OUTPUT,)):
                """Triton's client: binary tensors in and out, its connection kept alive between calls."""
                client = httpclient.InferenceServerClient(host, connection_timeout=60, network_timeout=60)
                tensor = httpclient.InferInput(ENSEMBLE_INPUT, [n, WINDOW], "FP32")
                tensor.set_data_from_numpy(windows[n], binary_data=True)
                requested = [httpclient.InferRequestedOutput(name, binary_data=True) for name in outputs]

                def call() -> np.ndarray:
                    return client.infer(served[layout], [tensor], outputs=requested).as_numpy(ENSEMBLE_OUTPUT)

                return call

            def json_new_connection(layout: str, n: int):
                def call() -> None:
                    status, _, payload = triton.infer(served[layout], bodies[n], {"Content-Type": "application/json"})
                    assert status == 200, payload

                return call

            def through_mme(n: int):
                def call() -> None:
                    runtime.invoke_endpoint(
                        EndpointName=endpoint.endpoint_name,
                        TargetModel=target_model(1, CUSTOMER),
                        ContentType="application/json",
                        Body=bodies[n],
                    )["Body"].read()

                return call

            # Both layouts answer what evaluation scored (forecaster.predict), before anything is timed.
            for n in windows:
                checked = [binary(layout, n) for layout in ("lean", "three-step", "point-only")]
                checked += [binary("lean", n, ENSEMBLE_OUTPUTS), _graph_alone(archives[CUSTOMER], windows[n])]
                for call in checked:
                    np.testing.assert_allclose(call(), pytorch(n)(), rtol=1e-4, atol=1e-4)

            ways = {
                "pytorch": pytorch,
                "graph": lambda n: _graph_alone(archives[CUSTOMER], windows[n]),
                "graph-quantiles": lambda n: _graph_alone(archives[CUSTOMER], windows[n], outputs=ENSEMBLE_OUTPUTS),
                "graph-point-only": lambda n: _graph_alone(archives[POINT_ONLY], windows[n], POINT_ONLY),
                "point-only-binary": lambda n: binary("point-only", n),
                "lean-binary-quantiles": lambda n: binary("lean", n, ENSEMBLE_OUTPUTS),
                "lean-binary": lambda n: binary("lean", n),
                "three-step-binary": lambda n: binary("three-step", n),
                "lean-json": lambda n: json_new_connection("lean", n),
                "three-step-json": lambda n: json_new_connection("three-step", n),
                "lean-mme": through_mme,
            }
            latency: dict[tuple[str, int], list[float]] = {}
            for n in windows:
                calls = {name: make(n) for name, make in ways.items()}
                for call in calls.values():
                    _time(call, 10)  # warm up
                samples = {name: [] for name in calls}
                for _ in range(repeats // 10):  # interleaved blocks: machine noise hits every way alike
                    for name, call in calls.items():
                        samples[name] += _time(call, 10)
                for name, values in samples.items():
                    latency[(name, n)] = values
            rates = {
                (name, n): _throughput(lambda name=name, n=n: ways[name](n), threads=2, seconds=seconds)
                for n in windows
                for name in (
                    "pytorch",
                    "three-step-binary",
                    "lean-binary",
                    "point-only-binary",
                    "lean-binary-quantiles",
                )
            }

    def ms(samples: list[float], q: float) -> str:
        return f"{_percentile(samples, q) * 1000:.3f} ms"

    labels = {
        "pytorch": "PyTorch direct (forecaster.predict)",
        "graph": "the lean ONNX graph alone, in-process onnxruntime",
        "graph-quantiles": "the lean ONNX graph alone, all three outputs",
        "graph-point-only": "the point-only ONNX graph alone (no quantile nodes)",
        "point-only-binary": "point-only ensemble (FORECAST alone), binary keep-alive client",
        "lean-binary-quantiles": "after: lean ensemble, FORECAST + P10 + P90 asked, binary keep-alive client",
        "three-step-binary": "before: three-step ensemble, binary keep-alive client",
        "lean-binary": "after: lean ensemble (one ONNX graph), binary keep-alive client",
        "three-step-json": "before: three-step ensemble, JSON, new connection per request",
        "lean-json": "after: lean ensemble, JSON, new connection per request",
        "lean-mme": "after: lean ensemble via MME stand-in (boto3, JSON)",
    }
    rows = []
    for n in windows:
        for name, label in labels.items():
            values = latency[(name, n)]
            rows.append((f"{label}, {n} window(s): p50 / p99", f"{ms(values, 50)} / {ms(values, 99)}"))
    for (name, n), rate in rates.items():
        rows.append(
            (f"{labels[name]}, {n} window(s): throughput (2 callers)", f"{rate:.0f} req/s = {rate * n:.0f} windows/s")
        )

    def p50(name: str, n: int) -> float:
        return statistics.median(latency[(name, n)])

    ratios = [
        ("lean / three-step p50, 64 windows, binary client", p50("lean-binary", 64) / p50("three-step-binary", 64)),
        ("JSON-new-connection / binary-keep-alive p50, lean, 1 window", p50("lean-json", 1) / p50("lean-binary", 1)),
        ("lean / PyTorch direct p50, 1 window, binary client", p50("lean-binary", 1) / p50("pytorch", 1)),
        *(
            (f"quantiles' cost: lean, all three outputs / point-only p50, {n} window(s), binary client",
             p50("lean-binary-quantiles", n) / p50("point-only-binary", n))
            for n in windows
        ),
        *(
            (f"quantiles' cost: graph alone, all three outputs / point-only graph p50, {n} window(s)",
             p50("graph-quantiles", n) / p50("graph-point-only", n))
            for n in windows
        ),
    ]  # fmt: skip
    rows += [(label, f"{value:.2f}") for label, value in ratios]
    ratio = p50("lean-binary", 1) / p50("three-step-binary", 1)
    return BenchResult(
        name="Inference: lean serving (one ONNX graph) vs the three-step ensemble, and the PyTorch model (local CPU)",
        ratio_label="lean / three-step ensemble (p50 latency, 1 window, binary keep-alive client)",
        ratio=ratio,
        target=f"<= {TARGET:.1f}",
        met=ratio <= TARGET,
        rows=[("latency samples per way and batch", str(repeats)), *rows],
        notes="Real Triton 2.51 (nvidia-pytriton wheel) on the CPU, both layouts built in this run from the same "
        "weights and loaded side by side through the MME stand-in. Locally the ONNX model itself runs through "
        "onnxruntime in a Python-backend runner (the wheel has no ONNX Runtime backend), so the lean ensemble still "
        "pays one Python-stub hop here, the three-step one three; on SageMaker the lean ensemble has none (Triton's "
        "ONNX Runtime backend, on the GPU). No GPU is lent to this task's machines, so there are no GPU figures.",
    )
