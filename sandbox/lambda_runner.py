"""Run a deployed Lambda function's real handler locally, in its own process, with its own environment.

Each function gets a worker process (sandbox/lambda_worker.py) started with the environment variables the
template gives the function (as resolved by the local CloudFormation) plus the local AWS endpoint, so handlers
that read configuration at import time behave as in Lambda and never see each other's settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, TextIO

from sandbox import lambda_zygote

ROOT = Path(__file__).resolve().parent.parent


class FunctionError(Exception):
    """The handler raised: what Lambda reports as a function error (type and message)."""

    def __init__(self, function: str, error: dict) -> None:
        super().__init__(f"{function}: {error['type']}: {error['message']}")
        self.error_type = error["type"]
        self.error_message = error["message"]  # what Lambda reports as errorMessage
        self.trace = error.get("trace", "")


class LocalFunction:
    def __init__(
        self,
        name: str,
        handler: str,
        environment: dict[str, str],
        *,
        log: TextIO | Path | None = None,
        timeout_seconds: float = 120.0,
    ) -> None:
        self.name = name
        self.handler = handler
        self.environment = environment
        self.timeout_seconds = timeout_seconds
        self._log_target = log
        self._log_file: TextIO | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one instance: invocations are serialised, like reserved concurrency 1

    def start(self) -> LocalFunction:
        if isinstance(self._log_target, Path):
            self._log_target.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self._log_target.open("a")
            stderr: Any = self._log_file
        else:
            stderr = self._log_target if self._log_target is not None else subprocess.DEVNULL
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MOTO_"))}
        env.update(self.environment)
        env["PYTHONPATH"] = str(ROOT)
        env["AWS_LAMBDA_FUNCTION_NAME"] = self.name
        self._process = self._fork(env, stderr) or subprocess.Popen(
            [sys.executable, "-m", "sandbox.lambda_worker", self.handler],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            bufsize=1,
        )
        ready = self._process.stdout.readline()
        if not ready:
            raise RuntimeError(f"Lambda {self.name} ({self.handler}) failed to start; see its log")
        return self

    def _fork(self, env: dict[str, str], stderr: Any) -> lambda_zygote.ForkedWorker | None:
        """The worker forked from the zygote (sandbox/lambda_zygote.py), or None: then a fresh interpreter."""
        if stderr is subprocess.DEVNULL:
            with open(os.devnull, "w") as devnull:
                return lambda_zygote.spawn(self.handler, env, devnull.fileno())
        try:
            fileno = stderr.fileno()
        except (AttributeError, OSError, ValueError):  # an in-memory stream: only a real process can write to it
            return None
        return lambda_zygote.spawn(self.handler, env, fileno)

    def invoke(self, event: Any) -> Any:
        if self._process is None:
            self.start()
        context = {
            "function_name": self.name,
            "function_version": "$LATEST",
            "memory_limit_in_mb": 512,
            "aws_request_id": str(uuid.uuid4()),
            "invoked_function_arn": f"arn:aws:lambda:local:000000000000:function:{self.name}",
            "log_group_name": f"/aws/lambda/{self.name}",
            "log_stream_name": "local",
        }
        with self._lock:
            self._process.stdin.write(json.dumps({"event": event, "context": context}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"Lambda {self.name} worker exited; see its log")
        reply = json.loads(line)
        if "error" in reply:
            raise FunctionError(self.name, reply["error"])
        return reply["result"]

    def __call__(self, event: Any, context: Any = None) -> Any:  # so a LocalFunction can be a LocalApiGateway route
        return self.invoke(event)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> LocalFunction:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalFunctionPool:
    """Several instances of one function: concurrent invocations run side by side, as Lambda scales out (one
    LocalFunction serialises them). `with LocalFunctionPool([LocalFunction(...), ...]) as pool: pool(event)`."""

    def __init__(self, functions: list[LocalFunction]) -> None:
        import queue

        self.functions = functions
        self._idle: queue.Queue[LocalFunction] = queue.Queue()

    def invoke(self, event: Any) -> Any:
        function = self._idle.get()
        try:
            return function.invoke(event)
        finally:
            self._idle.put(function)

    def __call__(self, event: Any, context: Any = None) -> Any:
        return self.invoke(event)

    def __enter__(self) -> LocalFunctionPool:
        try:
            for function in self.functions:
                function.start()
                self._idle.put(function)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for function in self.functions:
            function.stop()
