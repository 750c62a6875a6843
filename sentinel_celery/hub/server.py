"""HTTP framing: a threaded stdlib server on a loopback address.

Owns :class:`HubHTTPServer` (``ThreadingHTTPServer``, one thread per
connection, HTTP/1.1 keep-alive, a deep listen backlog so a hundred workers
can connect at once) and the request handler that reads a request, hands it
to the :class:`~sentinel_celery.hub.pipeline.Pipeline` and writes the answer.
Open connections are tracked so :meth:`HubHTTPServer.close_connections` can
end idle keep-alive threads on stop.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .loopback import is_loopback
from .pipeline import Pipeline

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sentinel-hub"
    timeout = 120  # seconds an idle keep-alive connection is kept
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid the delayed-ACK stall
    server: HubHTTPServer

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        body = self._read_body()
        headers = {key.lower(): value for key, value in self.headers.items()}
        result = self.server.pipeline.handle(self.command, self.path, headers, body)
        self.send_response(result.status)
        for key, value in result.headers:
            self.send_header(key, value)
        if result.status not in (204, 304) and not any(k.lower() == "content-length" for k, _ in result.headers):
            self.send_header("Content-Length", str(len(result.body)))
        self.end_headers()
        if result.body:
            self.wfile.write(result.body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, host: str, port: int, pipeline: Pipeline) -> None:
        if not is_loopback(host):
            raise ValueError(f"sentinel hub binds loopback addresses only, not {host!r}")
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        self.pipeline = pipeline
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((host.strip("[]"), port), _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
