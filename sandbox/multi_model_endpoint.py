"""A local stand-in for a SageMaker multi-model endpoint running Triton, reachable through boto3.

It speaks the SageMaker Runtime `InvokeEndpoint` HTTP API (`POST /endpoints/<name>/invocations`), so the real
invoke Lambda calls it through `boto3.client("sagemaker-runtime")` with only `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`
pointing here (`environ()`), and it behaves like the real endpoint where callers can tell:
- `TargetModel` is a path under the endpoint's model prefix; the archive is fetched (from the environment's
  model-repository bucket in the local AWS, or a directory) on first use, extracted and loaded into a real
  Triton (sandbox/triton.py), then served from memory: a later overwrite of the S3 object is NOT seen, as on
  SageMaker. Loaded models are evicted least-recently-used beyond `max_loaded_models`, or when another archive
  brings models of the same names (a customer's next version).
- Requests for a model while it is being loaded get `ModelNotReadyException`; a missing archive gets
  SageMaker's "Failed to download model data" `ValidationError`; more requests than the endpoint's capacity
  (`max_in_flight`, or the `rate_per_second` token bucket) get `ThrottlingException`; Triton's own errors come
  back as `ModelError` with the original status and message, like SageMaker's Triton container.
- Bodies are passed through to Triton's KServe v2 endpoint of the archive's ensemble: JSON, or binary+json
  (`application/vnd.sagemaker-triton.binary+json;json-header-size=N` <-> Triton's Inference-Header-Content-Length).
- Several endpoints (one per model group) share one local Triton: each loads its models under its own name
  prefix, as each SageMaker endpoint has its own container; `LocalSageMakerRuntime` serves several endpoints
  behind one URL, as SageMaker Runtime does, so one invoke Lambda reaches every group's endpoint.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from modelgate.model_repository import MME_PREFIX
from modelgate.serving.protocol import TRITON_BINARY_JSON
from sandbox.loopback_http import LoopbackHTTPServer
from sandbox.triton import LocalTriton, TritonError
from sandbox.triton_repository import ArchiveError, LocalModels, extract, localize

_INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")
_HEADER_SIZE = re.compile(r"json-header-size\s*=\s*(\d+)")
ACCOUNT = "000000000000"


class ArchiveSource(Protocol):
    location: str

    def fetch(self, target: str) -> bytes | None:
        """The archive's bytes, or None when there is no object for this target."""


@dataclass
class S3Archives:
    """Archives under the endpoint's ModelDataUrl in a (local) S3 bucket."""

    s3: Any
    bucket: str
    prefix: str = MME_PREFIX

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def fetch(self, target: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + target)["Body"].read()
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise


@dataclass
class DirectoryArchives:
    root: Path

    @property
    def location(self) -> str:
        return f"{self.root}/"

    def fetch(self, target: str) -> bytes | None:
        path = (self.root / target).resolve()
        if self.root.resolve() not in path.parents or not path.is_file():
            return None
        return path.read_bytes()


class _Refusal(Exception):
    def __init__(self, status: int, error_type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.extra = status, error_type, message, extra


@dataclass
class EndpointStats:
    invocations: int = 0
    loads: int = 0
    cache_hits: int = 0
    evictions: int = 0
    throttled: int = 0
    not_ready: int = 0
    load_seconds: list[float] = field(default_factory=list)


class LocalMultiModelEndpoint:
    """`with LocalMultiModelEndpoint(triton, source) as endpoint:` then point boto3 at `endpoint.url`."""

    def __init__(
        self,
        triton: LocalTriton,
        source: ArchiveSource,
        *,
        endpoint_name: str = "modelgate-local",
        max_loaded_models: int = 32,
        max_in_flight: int = 32,
        rate_per_second: float | None = None,
        burst: int | None = None,
        arn: str | None = None,
    ) -> None:
        # With `arn` (the endpoint as deployed), callers need sagemaker:InvokeEndpoint on it in the local IAM.
        self.arn = arn
        self.triton = triton
        self.source = source
        self.endpoint_name = endpoint_name
        self.max_loaded_models = max_loaded_models
        self.max_in_flight = max_in_flight
        self.rate_per_second = rate_per_second
        self.burst = burst if burst is not None else max(1, int(rate_per_second or 1))
        self.stats = EndpointStats()
        self._loaded: OrderedDict[str, LocalModels] = OrderedDict()  # target -> models, least recent first
        self._loading: set[str] = set()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._tokens = float(self.burst)
        self._refilled = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._scratch: Path | None = None

    # -- what a test or the demo reads -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("endpoint stand-in is not started (use it as a context manager)")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environ(self) -> dict[str, str]:
        """What a Lambda's environment needs so that its boto3 sagemaker-runtime client calls this stand-in."""
        return {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url}

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def loading(self) -> list[str]:
        with self._lock:
            return sorted(self._loading)

    def set_rate(self, rate_per_second: float | None, burst: int | None = None) -> None:
        with self._lock:
            self.rate_per_second = rate_per_second
            self.burst = burst if burst is not None else max(1, int(rate_per_second or 1))
            self._tokens, self._refilled = float(self.burst), time.monotonic()

    # -- admission ---------------------------------------------------------------------------------------------
    def _admit(self) -> None:
        with self._lock:
            if self.rate_per_second is not None:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate_per_second)
                self._refilled = now
                if self._tokens < 1:
                    self.stats.throttled += 1
                    raise _Refusal(400, "ThrottlingException", "Rate exceeded")
                self._tokens -= 1
            if self._in_flight >= self.max_in_flight:
                self.stats.throttled += 1
                raise _Refusal(400, "ThrottlingException", "Rate exceeded")
            self._in_flight += 1
            self.stats.invocations += 1

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # -- model cache ---------------------------------------------------------------------------------------------
    def _models_for(self, target: str) -> LocalModels:
        with self._lock:
            if target in self._loaded:
                self._loaded.move_to_end(target)
                self.stats.cache_hits += 1
                return self._loaded[target]
            if target in self._loading:
                self.stats.not_ready += 1
                raise _Refusal(
                    429, "ModelNotReadyException", f"Model {target} is still being downloaded or loaded. Retry later."
                )
            self._loading.add(target)
        try:
            return self._load(target)
        finally:
            with self._lock:
                self._loading.discard(target)

    def _load(self, target: str) -> LocalModels:
        started = time.monotonic()
        archive = self.source.fetch(target)
        if archive is None:
            raise _Refusal(
                400,
                "ValidationError",
                f"Failed to download model data(location: {self.source.location}{target}). Please ensure that there "
                "is an object located at the URL and that the role passed to CreateModel has permissions to "
                "download the model.",
            )
        staging = Path(tempfile.mkdtemp(dir=self._scratch))
        try:
            models = localize(extract(archive, staging), self._staging_repository(target), self.namespace)
        except ArchiveError as error:
            message = f"Failed to load model {target}: {error}"
            raise _Refusal(424, "ModelError", message, OriginalStatusCode=500) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with self._lock:
            # Same model names as a loaded archive (the customer's previous version): that one goes first.
            clashing = [t for t, m in self._loaded.items() if set(m.names) & set(models.names)]
            overflow = max(0, len(self._loaded) - len(clashing) + 1 - self.max_loaded_models)
            evict = clashing + [t for t in self._loaded if t not in clashing][:overflow]
            evicted = [self._loaded.pop(old) for old in evict]
        for old in evicted:
            self._unload(old)
        self._install(target, models)
        try:
            self.triton.load(models.entry)
        except TritonError as error:
            raise _Refusal(
                424, "ModelError", f"Failed to load model {target}: {error.message}", OriginalStatusCode=500
            ) from None
        with self._lock:
            self._loaded[target] = models
            self.stats.loads += 1
            self.stats.evictions += len(evict)
            self.stats.load_seconds.append(time.monotonic() - started)
        return models

    @property
    def namespace(self) -> str:
        """Prefix of this endpoint's model names in the shared local Triton."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.endpoint_name) + "__"

    def _staging_repository(self, target: str) -> Path:
        directory = self._scratch / "localized" / re.sub(r"[^A-Za-z0-9_.-]", "_", target)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return directory

    def _install(self, target: str, models: LocalModels) -> None:
        source = self._scratch / "localized" / re.sub(r"[^A-Za-z0-9_.-]", "_", target)
        for name in models.names:
            destination = self.triton.repository / name
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(source / name, destination)

    def _unload(self, models: LocalModels) -> None:
        with contextlib.suppress(TritonError):  # already gone: nothing to free
            self.triton.unload(models.entry)

    # -- invocation --------------------------------------------------------------------------------------------
    def invoke(self, endpoint: str, target: str | None, content_type: str, body: bytes) -> tuple[int, dict, bytes]:
        if endpoint != self.endpoint_name:
            raise _Refusal(400, "ValidationError", f"Endpoint {endpoint} of account {ACCOUNT} not found.")
        if not target:
            raise _Refusal(400, "ValidationError", "TargetModel header is required for a multi-model endpoint.")
        self._admit()
        try:
            models = self._models_for(target)
            headers = {"Content-Type": "application/json"}
            if content_type.lower().startswith(TRITON_BINARY_JSON):
                found = _HEADER_SIZE.search(content_type)
                if not found:
                    raise _Refusal(400, "ValidationError", "json-header-size is required for binary+json")
                headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": found[1]}
            status, triton_headers, payload = self.triton.infer(models.entry, body, headers)
        finally:
            self._release()
        if status != 200:
            raise _Refusal(
                424,
                "ModelError",
                f"Received {'client' if status < 500 else 'server'} error ({status}) from primary with message "
                f'"{payload.decode(errors="replace")[:1000]}". See the endpoint\'s log for more information.',
                OriginalStatusCode=status,
                OriginalMessage=payload.decode(errors="replace"),
                LogStreamArn=f"arn:aws:logs:local:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{endpoint}",
            )
        header_size = triton_headers.get("inference-header-content-length")
        response_type = f"{TRITON_BINARY_JSON};json-header-size={header_size}" if header_size else "application/json"
        return 200, {"Content-Type": response_type, "X-Amzn-Invoked-Production-Variant": "AllTraffic"}, payload

    def _authorize(self, headers: Any) -> None:
        if self.arn is None:
            return
        from sandbox.iam import authorize_signed

        region = self.arn.split(":")[3]
        denial = authorize_signed(headers, region, "sagemaker:InvokeEndpoint", self.arn)
        if denial is not None:
            message = f"User: {denial.principal} is not authorized to perform: {denial.action} on resource: {self.arn}"
            raise _Refusal(400, "AccessDeniedException", message)

    # -- HTTP --------------------------------------------------------------------------------------------------
    def __enter__(self) -> LocalMultiModelEndpoint:
        self._scratch = Path(tempfile.mkdtemp(prefix="local-mme-", dir=self.triton.workdir))
        self._server = _runtime_server(lambda name: self)  # its own invoke() refuses other endpoint names
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            loaded, self._loaded = list(self._loaded.values()), OrderedDict()
        for models in loaded:
            self._unload(models)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


class LocalSageMakerRuntime:
    """Several endpoint stand-ins behind one SageMaker Runtime URL (`InvokeEndpoint` picks one by name)."""

    def __init__(self, endpoints: list[LocalMultiModelEndpoint]) -> None:
        self.endpoints = {endpoint.endpoint_name: endpoint for endpoint in endpoints}
        self._stack = contextlib.ExitStack()
        self._server: ThreadingHTTPServer | None = None

    @classmethod
    def of_endpoints(
        cls, triton: LocalTriton, endpoint_names: Iterable[str], sagemaker: Any, s3_for: Callable[[str], Any]
    ) -> LocalSageMakerRuntime:
        """Stand-ins for endpoints recorded in the (local) SageMaker, as deployed from the models' stacks: each reads
        its archives from its model's ModelDataUrl with an S3 client of its execution role (`s3_for(role_arn)`),
        and callers need sagemaker:InvokeEndpoint on its ARN. E.g. the names of the invoke Lambda's
        `InferenceSettings.from_environ(environment).models`."""
        endpoints = []
        for name in endpoint_names:
            described = sagemaker.describe_endpoint(EndpointName=name)
            config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
            (variant,) = config["ProductionVariants"]
            model = sagemaker.describe_model(ModelName=variant["ModelName"])
            bucket, _, prefix = model["PrimaryContainer"]["ModelDataUrl"].removeprefix("s3://").partition("/")
            archives = S3Archives(s3_for(model["ExecutionRoleArn"]), bucket, prefix)
            # SageMaker lower-cases the name in its ARNs (IAM policies name those); moto keeps the case.
            kind, _, named = described["EndpointArn"].rpartition("/")
            arn = f"{kind}/{named.lower()}"
            endpoints.append(LocalMultiModelEndpoint(triton, archives, endpoint_name=name, arn=arn))
        return cls(endpoints)

    @classmethod
    def of_serving_stack(cls, triton: LocalTriton, serving: Any, account: Any) -> LocalSageMakerRuntime:
        """Every model's endpoint that a Serving stack deployed into the local AWS (`sandbox.cloudformation`) routes
        to, as its invoke Lambda names them (the endpoints themselves are in the `Serving-<model>` stacks); SageMaker
        loads archives with each endpoint's execution role."""
        from modelgate.serving.settings import InferenceSettings

        invoke = next(spec for spec in serving.functions.values() if spec.handler == "lambdas.inference_api.handler")
        names = [model.endpoint_name for model in InferenceSettings.from_environ(invoke.environment).models]

        def s3_for(role: str) -> Any:
            return account.assume(role, "sagemaker.amazonaws.com", session_name="SageMaker").client("s3")

        return cls.of_endpoints(triton, names, account.client("sagemaker"), s3_for)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("SageMaker Runtime stand-in is not started (use it as a context manager)")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environ(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url}

    def __enter__(self) -> LocalSageMakerRuntime:
        for endpoint in self.endpoints.values():
            self._stack.enter_context(endpoint)
        self._server = _runtime_server(self.endpoints.get)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._stack.close()


def _runtime_server(resolve: Callable[[str], LocalMultiModelEndpoint | None]) -> ThreadingHTTPServer:
    """SageMaker Runtime's InvokeEndpoint over HTTP, for the endpoint stand-in `resolve(name)` returns."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            found = _INVOCATIONS.match(self.path.split("?", 1)[0])
            try:
                if not found:
                    raise _Refusal(404, "UnknownOperationException", f"unknown operation {self.path}")
                endpoint = resolve(found.group(1))
                if endpoint is None:
                    raise _Refusal(400, "ValidationError", f"Endpoint {found.group(1)} of account {ACCOUNT} not found.")
                endpoint._authorize(self.headers)
                status, headers, payload = endpoint.invoke(
                    found.group(1),
                    self.headers.get("X-Amzn-SageMaker-Target-Model"),
                    self.headers.get("Content-Type") or "application/json",
                    body,
                )
            except _Refusal as refusal:
                status = refusal.status
                headers = {"Content-Type": "application/json", "x-amzn-ErrorType": refusal.error_type}
                payload = json.dumps({"message": refusal.message, **refusal.extra}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="local-sagemaker-runtime", daemon=True).start()
    return server
