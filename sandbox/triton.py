"""A real NVIDIA Triton Inference Server on the CPU, on loopback, for tests, benchmarks and the demo.

The server is the `tritonserver` binary (and Python backend) that the nvidia-pytriton wheel carries. Running it
outside NVIDIA's container needs three things, which `runtime()` prepares once under .build/triton/:
- the wheel's bundled libraries on LD_LIBRARY_PATH;
- a backend directory holding the Python backend with the stub built for this Python (3.11);
- an interpreter environment for the stub. The stub embeds Debian's libpython3.11 in isolated mode (it ignores
  PYTHONPATH) and finds its prefix by looking `python3` up on PATH, so a venv-shaped directory first on the
  server's PATH becomes its environment: Debian's stdlib (`home = /usr/bin`), Debian's numpy 1.x (the stub's
  tensor code reads numpy 1.x array structs; numpy 2 arrays come out garbled) and, after it, this project's
  venv for everything else (onnxruntime).

Models are loaded and unloaded explicitly (`--model-control-mode=explicit`), as SageMaker's multi-model
endpoint does. The server runs in its own process group, killed on exit even when the body raised.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".build" / "triton"
DEBIAN_NUMPY = Path("/usr/lib/python3/dist-packages/numpy")
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
STUB_PYTHON = "3.11"  # Debian 12's libpython: the stub links it whatever Python runs this module


class TritonUnavailable(RuntimeError):
    """Triton cannot run on this machine; the message says what to install."""


class TritonError(RuntimeError):
    """Triton answered a repository or inference call with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Triton {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TritonRuntime:
    server: Path  # tritonserver binary
    libraries: Path  # the wheel's bundled shared libraries
    backends: Path  # --backend-directory
    environment: Path  # venv-shaped directory the Python backend stub runs in


def _wheel_root() -> Path:
    try:
        files = metadata.distribution("nvidia-pytriton").locate_file("")
    except metadata.PackageNotFoundError:
        raise TritonUnavailable(
            "nvidia-pytriton is not installed: make setup (requirements-nodeps.txt, installed with --no-deps)"
        ) from None
    return Path(str(files))


def runtime() -> TritonRuntime:
    """Locate the server and build (once, atomically) the backend directory and the stub's environment."""
    root = _wheel_root()
    server = root / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    libraries = root / "nvidia_pytriton.libs"
    stub = root / "pytriton" / "tritonserver" / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub"
    backend = root / "pytriton" / "tritonserver" / "backends" / "python"
    for needed in (server, libraries, stub, backend / "libtriton_python.so"):
        if not needed.exists():
            raise TritonUnavailable(f"{needed} is missing from the nvidia-pytriton wheel")
    if not DEBIAN_PYTHON.exists() or not DEBIAN_NUMPY.is_dir():
        raise TritonUnavailable(
            f"the Python backend stub needs Debian's Python 3.11 and numpy ({DEBIAN_PYTHON}, {DEBIAN_NUMPY}): "
            "apt-get install python3.11 python3-numpy (system-packages.txt, make setup)"
        )
    venv_site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    version = metadata.version("nvidia-pytriton")
    digest = hashlib.sha256(f"{version}|{root}|{venv_site}|{DEBIAN_NUMPY.resolve()}".encode()).hexdigest()[:16]
    target = CACHE / digest
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{digest}-"))
        try:
            python_backend = staging / "backends" / "python"
            python_backend.mkdir(parents=True)
            for item in backend.iterdir():
                if item.is_file():
                    shutil.copy2(item, python_backend / item.name)
            shutil.copy2(stub, python_backend / stub.name)
            environment = staging / "env"
            site = environment / "lib" / f"python{STUB_PYTHON}" / "site-packages"
            (environment / "bin").mkdir(parents=True)
            site.mkdir(parents=True)
            (environment / "bin" / "python3").symlink_to(DEBIAN_PYTHON)
            (environment / "pyvenv.cfg").write_text(
                f"home = {DEBIAN_PYTHON.parent}\ninclude-system-site-packages = false\nversion = {STUB_PYTHON}\n"
            )
            (site / "numpy").symlink_to(DEBIAN_NUMPY.resolve())
            (site / "zz-modelgate-venv.pth").write_text(f"{venv_site}\n")  # after numpy: onnxruntime & co.
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return TritonRuntime(server, libraries, target / "backends", target / "env")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalTriton:
    """`with LocalTriton(workdir) as triton:` serves `triton.repository` on `triton.url` (KServe v2 HTTP)."""

    def __init__(self, workdir: str | Path, *, startup_seconds: float = 60.0, threads: int = 2) -> None:
        self.workdir = Path(workdir)
        self.repository = self.workdir / "repository"
        self.log_path = self.workdir / "tritonserver.log"
        self.startup_seconds = startup_seconds
        self.threads = threads
        self.port: int | None = None
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Triton is not started (use it as a context manager)")
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------------------------
    def _command(self, rt: TritonRuntime, port: int) -> list[str]:
        return [
            str(rt.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={rt.backends}",
            "--model-control-mode=explicit",
            "--http-address=127.0.0.1",
            f"--http-port={port}",
            f"--http-thread-count={self.threads}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]

    def _environment(self, rt: TritonRuntime) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CUDA_"))}
        env["PATH"] = f"{rt.environment / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["LD_LIBRARY_PATH"] = f"{rt.libraries}:{env.get('LD_LIBRARY_PATH', '')}".rstrip(":")
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only: no device probing
        return env

    def start(self) -> LocalTriton:
        rt = runtime()
        self.repository.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a picked port can be taken before Triton binds it: pick another
            port = free_port()
            log = self.log_path.open("ab")
            try:
                self._process = subprocess.Popen(
                    self._command(rt, port),
                    env=self._environment(rt),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # own process group: stop() takes the stubs down with it
                )
            finally:
                log.close()
            self.port = port
            if self._wait_ready():
                return self
            self.stop()
        raise TritonUnavailable(f"tritonserver did not start; see {self.log_path}:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                status, _, _ = self.request("GET", "/v2/health/ready", timeout=1.0)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        self.port = None

    def __enter__(self) -> LocalTriton:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- HTTP -------------------------------------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout=60.0
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def _repository_call(self, path: str, body: dict | None = None) -> None:
        status, _, payload = self.request("POST", path, json.dumps(body or {}).encode(), timeout=120.0)
        if status != 200:
            raise TritonError(status, _error_message(payload))

    def load(self, model: str) -> None:
        """Load (or reload) `model` from the repository directory; an ensemble loads its steps too."""
        self._repository_call(f"/v2/repository/models/{model}/load")

    def unload(self, model: str) -> None:
        self._repository_call(f"/v2/repository/models/{model}/unload", {"parameters": {"unload_dependents": True}})

    def infer(self, model: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", f"/v2/models/{model}/infer", body, headers)


def _error_message(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("error") or payload.decode(errors="replace"))
    except (json.JSONDecodeError, AttributeError):
        return payload.decode(errors="replace")
