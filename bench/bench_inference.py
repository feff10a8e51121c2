"""Local inference: one customer's Triton ensemble (real Triton on the CPU, the pipeline's packaged archive) vs
calling the same PyTorch model directly, per request of 1 window and of 64 windows (the archive's batch limit).

Three ways, measured interleaved in one run:
- PyTorch direct: the pipeline's `predict` (normalise, fill gaps, model, de-normalise) in this process;
- Triton: KServe v2 JSON to the ensemble over loopback HTTP (preprocess -> ONNX -> postprocess);
- Triton through the SageMaker MME stand-in via boto3 `invoke_endpoint` (what the invoke Lambda does).
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
from modelgate.model_repository import ENSEMBLE_INPUT, MAX_BATCH_SIZE, WINDOW, model_names, target_model

TARGET = 50.0  # ensemble / PyTorch p50 at 1 window: HTTP + three Triton steps (two Python-backend IPC hops)
CUSTOMER = "bench-customer"


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


def _throughput(call, threads: int, seconds: float) -> float:
    """Requests per second with `threads` concurrent callers for `seconds`."""
    done, stop = [0] * threads, time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < stop:
            call()
            done[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def run(quick: bool = False) -> BenchResult:
    import boto3
    import torch

    from sandbox.model_archives import example_version
    from sandbox.multi_model_endpoint import DirectoryArchives, LocalMultiModelEndpoint
    from sandbox.triton import LocalTriton

    repeats, seconds = (100, 2.0) if quick else (400, 5.0)
    torch.set_num_threads(1)  # like one Triton model instance
    version = example_version([CUSTOMER], hidden=16)
    rng = np.random.default_rng(0)
    windows = {n: rng.uniform(0.5, 5.0, (n, WINDOW)).astype(np.float32) for n in (1, MAX_BATCH_SIZE)}
    for values in windows.values():
        values[:, 100:104] = np.nan  # a gap, so gap filling is part of the work
    bodies = {n: _request(values) for n, values in windows.items()}
    ensemble = model_names(CUSTOMER)["ensemble"]

    with tempfile.TemporaryDirectory() as scratch:
        archives = Path(scratch) / "archives" / "v1"
        archives.mkdir(parents=True)
        (archives / f"{CUSTOMER}.tar.gz").write_bytes(version.archives[CUSTOMER])
        with (
            LocalTriton(Path(scratch) / "triton") as triton,
            LocalMultiModelEndpoint(triton, DirectoryArchives(archives.parent)) as endpoint,
        ):
            ensemble = endpoint.namespace + ensemble  # its name in Triton: each endpoint loads under its own prefix
            runtime = boto3.client(
                "sagemaker-runtime",
                endpoint_url=endpoint.url,
                region_name="eu-west-1",
                aws_access_key_id="local",
                aws_secret_access_key=os.urandom(8).hex(),
            )

            def pytorch(n: int):
                return lambda: version.reference(CUSTOMER, windows[n])

            def triton_http(n: int):
                def call() -> None:
                    status, _, payload = triton.infer(ensemble, bodies[n], {"Content-Type": "application/json"})
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

            # Warm up (the first MME call loads the archive into Triton) and check the answers agree.
            through_mme(1)()
            _, _, payload = triton.infer(ensemble, bodies[1], {"Content-Type": "application/json"})
            served = np.array(json.loads(payload)["outputs"][0]["data"], np.float32)
            np.testing.assert_allclose(served, pytorch(1)().ravel(), rtol=1e-4, atol=1e-4)
            for n in windows:
                for call in (pytorch(n), triton_http(n), through_mme(n)):
                    _time(call, 10)

            latency: dict[tuple[str, int], list[float]] = {}
            for n in windows:
                ways = {"pytorch": pytorch(n), "triton": triton_http(n), "mme": through_mme(n)}
                samples = {name: [] for name in ways}
                for _ in range(repeats // 10):  # interleaved blocks: machine noise hits all three alike
                    for name, call in ways.items():
                        samples[name] += _time(call, 10)
                for name, values in samples.items():
                    latency[(name, n)] = values
            rates = {
                (name, n): _throughput(call, threads=2, seconds=seconds)
                for n in windows
                for name, call in (("pytorch", pytorch(n)), ("triton", triton_http(n)))
            }

    def ms(samples: list[float], q: float) -> str:
        return f"{_percentile(samples, q) * 1000:.2f} ms"

    rows = []
    labels = {"pytorch": "PyTorch direct", "triton": "Triton ensemble (HTTP)", "mme": "Triton via MME stand-in (boto3)"}
    for n in windows:
        for name, label in labels.items():
            values = latency[(name, n)]
            rows.append((f"{label}, {n} window(s): p50 / p99", f"{ms(values, 50)} / {ms(values, 99)}"))
    for (name, n), rate in rates.items():
        rows.append(
            (f"{labels[name]}, {n} window(s): throughput (2 callers)", f"{rate:.0f} req/s = {rate * n:.0f} windows/s")
        )
    ratio = statistics.median(latency[("triton", 1)]) / statistics.median(latency[("pytorch", 1)])
    return BenchResult(
        name="Inference: Triton ensemble vs the PyTorch model called directly (local CPU)",
        ratio_label="Triton ensemble / PyTorch direct (p50 latency, 1 window)",
        ratio=ratio,
        target=f"<= {TARGET:.0f}",
        met=ratio <= TARGET,
        rows=[("latency samples per way and batch", str(repeats)), *rows],
        notes="Real Triton 2.51 (nvidia-pytriton wheel) on the CPU; the ONNX step runs through onnxruntime in a "
        "Python-backend model locally (SageMaker runs it in Triton's ONNX Runtime backend on the GPU). No GPU is "
        "lent to this task's machines, so there are no GPU Triton figures.",
    )
