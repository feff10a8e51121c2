"""Make moto's DynamoDB atomic per request, as DynamoDB is.

DynamoDB applies each request (a conditional PutItem, a TransactWriteItems) atomically: two conditional writes on
one key never both succeed. moto checks the condition and writes in separate steps, and restores a deep copy of
the table when a transaction is cancelled, so under threads it lets racing writers both "win" and can even undo
another request's write. Tests that race requests (and the demo, whose local API serves requests on threads)
wrap moto's DynamoDB request handler in one lock, so that the stand-in offers the guarantee the code relies on.
The code under test is unchanged and still races: only the stand-in's own bookkeeping is serialised.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from moto.dynamodb.responses import DynamoHandler

_LOCK = threading.RLock()


@contextmanager
def atomic_dynamodb() -> Iterator[None]:
    original = DynamoHandler.call_action

    def call_action(self):  # type: ignore[no-untyped-def]
        with _LOCK:
            return original(self)

    DynamoHandler.call_action = call_action
    try:
        yield
    finally:
        DynamoHandler.call_action = original
