"""Start local Lambda workers in a fraction of a cold interpreter's time: fork them from a zygote.

A fresh worker process (sandbox/lambda_worker.py) spends ~1.5 s importing boto3, Powertools and PyJWT and ~1 s
more loading botocore's service models on its first calls, per function; the demo starts ~25 functions. The
zygote is one process that has imported those third-party libraries and loaded the service models once (no
ModelGate module: handlers read their configuration at import time), and forks a worker per function. The
child then does what a fresh worker does: takes its own environment (only the function's, nothing of the
parent's), its own stdin/stdout/stderr, imports its handler and serves invocations. So a handler still sees
only the environment its template gives it, as in Lambda; only the libraries' import cost is shared.

`spawn(handler, environ, stderr_fd)` returns a `ForkedWorker` with the parts of `subprocess.Popen` that
sandbox.lambda_runner uses (stdin, stdout, wait, kill), or None where forking is not possible (then the caller
starts a fresh interpreter). MODELGATE_SANDBOX_ZYGOTE=0 turns it off.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRELOAD = ("boto3", "aws_lambda_powertools", "aws_lambda_powertools.utilities.data_classes", "jwt")
# Every service a handler creates a client for (grep `client(` in modelgate/ and lambdas/), plus kms and ses.
SERVICES = (
    "apigateway", "cloudformation", "dynamodb", "events", "glue", "kms", "s3", "sagemaker", "sagemaker-runtime",
    "ses", "ssm", "sts",
)  # fmt: skip
_MESSAGE_LIMIT = 1 << 20


class ForkedWorker:
    """A worker forked by the zygote: not this process's child, so its exit is watched through a pidfd."""

    def __init__(self, pid: int, stdin, stdout) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self._pidfd = os.pidfd_open(pid)
        self._returncode: int | None = None

    def poll(self) -> int | None:
        if self._returncode is None and select.select([self._pidfd], [], [], 0)[0]:
            self._exited()
        return self._returncode

    def wait(self, timeout: float | None = None) -> int:
        if self._returncode is None:
            if not select.select([self._pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"lambda worker {self.pid}", timeout)
            self._exited()
        return self._returncode

    def _exited(self) -> None:
        os.close(self._pidfd)  # the zygote reaps the process; its exit status is not ours to read
        self._pidfd, self._returncode = -1, 0

    def kill(self) -> None:
        if self._returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)


class Zygote:
    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MOTO_"))}
        env["PYTHONPATH"] = str(ROOT)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.lambda_zygote", str(child.fileno())],
            cwd=ROOT,
            env=env,
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        child.close()
        self._socket = parent  # one request and its reply at a time: callers hold spawn()'s lock
        ready = parent.recv(64)
        if ready != b"ready":
            raise RuntimeError("the Lambda zygote did not start")

    def spawn(self, handler: str, environ: dict[str, str], stderr_fd: int) -> ForkedWorker:
        stdin_read, stdin_write = os.pipe()
        stdout_read, stdout_write = os.pipe()
        try:
            message = json.dumps({"handler": handler, "environ": environ}).encode()
            socket.send_fds(self._socket, [message], [stdin_read, stdout_write, stderr_fd])
            pid = int(self._socket.recv(64))
        finally:
            os.close(stdin_read)
            os.close(stdout_write)
        return ForkedWorker(pid, os.fdopen(stdin_write, "w", buffering=1), os.fdopen(stdout_read, "r"))

    def stop(self) -> None:
        self._socket.close()  # the zygote exits on EOF; its workers live on until their stdin closes
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()
_zygote_failed = False
_workers: list[ForkedWorker] = []


def spawn(handler: str, environ: dict[str, str], stderr_fd: int) -> ForkedWorker | None:
    """A worker for `handler` forked from this process's zygote (started on first use), or None."""
    global _zygote, _zygote_failed
    if os.environ.get("MODELGATE_SANDBOX_ZYGOTE", "1") == "0" or not hasattr(os, "pidfd_open") or _zygote_failed:
        return None
    with _zygote_lock:
        if _zygote is None:
            try:
                _zygote = Zygote()
            except (OSError, RuntimeError):
                _zygote_failed = True
                return None
        worker = _zygote.spawn(handler, environ, stderr_fd)
        _workers[:] = [w for w in _workers if w.poll() is None] + [worker]
    return worker


def running() -> list[int]:
    """The pids of forked workers still running (they are the zygote's children, not the caller's)."""
    with _zygote_lock:
        return [w.pid for w in _workers if w.poll() is None]


def stop() -> None:
    """Kill the workers still running and stop the zygote; the next spawn starts a new one."""
    global _zygote
    with _zygote_lock:
        for worker in _workers:
            worker.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=5)
        _workers.clear()
        if _zygote is not None:
            _zygote.stop()
            _zygote = None


atexit.register(stop)


# -- the zygote process ------------------------------------------------------------------------------------------
def _preload() -> None:
    import importlib

    import botocore.loaders
    import botocore.session

    for module in PRELOAD:
        importlib.import_module(module)
    loader = botocore.loaders.create_loader()
    for service in SERVICES:
        for kind in ("service-2", "endpoint-rule-set-1"):
            loader.load_service_model(service, kind)
    for data in ("endpoints", "partitions", "_retry", "sdk-default-configuration"):
        loader.load_data(data)
    create_loader = botocore.session.create_loader

    def shared_loader(search_path_string=None):
        # Every botocore session of a worker reads the models loaded above (one session shares one loader anyway).
        return loader if search_path_string is None else create_loader(search_path_string)

    botocore.session.create_loader = shared_loader


def _become_worker(request: dict, fds: list[int]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["environ"])
    sys.argv = ["sandbox.lambda_worker", request["handler"]]
    from sandbox import lambda_worker

    lambda_worker.main()


def _serve(channel: socket.socket) -> None:
    _preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked workers are reaped by the kernel, never zombies
    channel.send(b"ready")
    while True:
        message, fds, _, _ = socket.recv_fds(channel, _MESSAGE_LIMIT, 3)
        if not message:
            return
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                channel.close()
                _become_worker(request, fds)
            except BaseException:  # a worker reports anything on its stderr and exits
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        for fd in fds:
            os.close(fd)
        channel.send(str(pid).encode())


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])))
