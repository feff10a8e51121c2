"""The loopback stand-ins take as many simultaneous connections as the tests (and a browser) throw at them.

No timing is guessed: the test waits on the connections' completion (the kernel's handshake), with a generous
upper bound only for the failure case."""

from __future__ import annotations

import selectors
import socket
import time
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import pytest

from sandbox.loopback_http import LoopbackHTTPServer

CLIENTS = 64  # more than the 50 concurrent POSTs of tests/integration/approval/test_concurrency.py


def completed_connections(address, count: int, deadline_seconds: float = 20.0) -> int:
    """Open `count` non-blocking connections at once; how many the server's kernel queue completes."""
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(address)
        selector.register(client, selectors.EVENT_WRITE)
        sockets.append(client)
    done, deadline = 0, time.monotonic() + deadline_seconds
    try:
        while done < count and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                selector.unregister(key.fileobj)
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    done += 1
        return done
    finally:
        for client in sockets:
            client.close()


def test_a_stand_in_queues_many_simultaneous_connections_while_its_accept_loop_is_busy():
    """Like AWS's endpoints, a stand-in does not drop connections because its accept loop is slow: with the
    accept loop not running at all, every one of CLIENTS simultaneous connections still completes."""
    server = LoopbackHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # listening, never accepting
    try:
        assert completed_connections(server.server_address, CLIENTS) == CLIENTS
    finally:
        server.server_close()


@pytest.mark.parametrize("stand_in", ["api_gateway", "issuer", "mme"])
def test_every_loopback_stand_in_uses_the_large_backlog_server(stand_in, tmp_path):
    from sandbox.api_gateway import LocalApiGateway
    from sandbox.multi_model_endpoint import LocalMultiModelEndpoint
    from sandbox.oidc_issuer import LocalIssuer

    make = {
        "api_gateway": lambda: LocalApiGateway([]),
        "issuer": LocalIssuer,
        # the server is all this test looks at: no Triton behind it, and no request is sent
        "mme": lambda: LocalMultiModelEndpoint(SimpleNamespace(workdir=tmp_path), source=None),
    }[stand_in]
    with make() as running:
        assert isinstance(running._server, LoopbackHTTPServer)
