"""A tiny handler for tests/unit/test_lambda_runner.py."""

import os

GREETING = os.environ["GREETING"]  # read at import, like real handlers read their configuration


def handler(event, context):
    if "getenv" in event:
        return {"value": os.environ.get(event["getenv"]), "pid": os.getpid()}
    if "name" not in event:
        raise ValueError("no name")
    print(f"handling {event['name']}")
    return {"message": f"{GREETING} {event['name']}", "function": context.function_name}
