"""Worker process of sandbox.lambda_runner: imports one handler and serves invocations over pipes.

Protocol: one JSON object per line on stdin ({"event": ..., "context": {...}}), one per line on the original
stdout ({"result": ...} or {"error": {"type", "message", "trace"}}). Whatever the handler prints goes to
stderr, like a Lambda's log stream.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback


class Context:
    def __init__(self, fields: dict) -> None:
        self.__dict__.update(fields)

    def get_remaining_time_in_millis(self) -> int:
        return int(self.__dict__.get("remaining_ms", 30_000))


def main() -> None:
    module_name, _, function_name = sys.argv[1].rpartition(".")
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the handler's prints and logs go to stderr
    sys.stdout = sys.stderr
    handler = getattr(importlib.import_module(module_name), function_name)
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"result": handler(request["event"], Context(request["context"]))}
        except Exception as error:  # a Lambda reports any handler exception as a function error
            reply = {"error": {"type": type(error).__name__, "message": str(error), "trace": traceback.format_exc()}}
        protocol.write(json.dumps(reply, default=str) + "\n")


if __name__ == "__main__":
    main()
