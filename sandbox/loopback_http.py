"""The HTTP server every loopback stand-in runs on (local API Gateway, MME stand-in, OIDC issuer / JWKS).

`ThreadingHTTPServer` listens with socketserver's default backlog of 5. When more clients connect at once than
the accept loop drains (50 concurrent POSTs on a loaded 2-core machine), the kernel's accept queue overflows
and connections are dropped or reset (ConnectionResetError in the client). The real services accept thousands;
the stand-ins listen with the system's maximum backlog, and handler threads never keep the process alive.
"""

from __future__ import annotations

import socket
from http.server import ThreadingHTTPServer

LISTEN_BACKLOG = max(socket.SOMAXCONN, 1024)  # the kernel caps it at net.core.somaxconn


class LoopbackHTTPServer(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True
