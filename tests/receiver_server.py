"""A real webhook receiver on a local address (http.server in a thread, https with a
trustme certificate), answering by path as the outcome tests need:

    /ok /gone /error      200, 410, 500
    /nul                  200 with NUL bytes in its body
    /throttle?after=X     429 with Retry-After: X (seconds or an HTTP date)
    /busy?after=X         503 with Retry-After: X
    /redirect             302 to http://127.0.0.1:<port>/ok (never to be followed)
    /slow                 no answer until the server stops
    /reset                the connection reset (RST) once the request is read
    /huge                 a 1 GB body streamed in 64 KiB chunks, never held in memory
    /trickle              200, then one byte a second
    /drip-headers         the status line, then the headers one byte a second

It records every request (path, headers, body, the address it was received on) and every
connection accepted, so a test can say where a sender connected.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GIGABYTE = 1024**3
_FIXED = {
    "/ok": (200, b'{"received": true, "token": "tok_secret"}'),
    "/gone": (410, b"endpoint removed"),
    "/error": (500, b"\xff\xfe broken \xc3"),
    "/nul": (200, b'{"ok": true}\x00\x00 and after'),
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    local: str  # the address the request arrived at


@dataclass
class Receiver:
    host: str
    port: int
    scheme: str
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    huge_bytes_sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver

    def get_request(self) -> tuple[Any, Any]:
        conn, addr = super().get_request()
        self.receiver.connections += 1
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and abandoned reads are what these tests do


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        parts = urlsplit(self.path)
        local = self.connection.getsockname()[0]
        receiver.requests.append(Received(parts.path, dict(self.headers.items()), body, local))
        if parts.path in _FIXED:
            self._answer(*_FIXED[parts.path])
        elif parts.path in ("/throttle", "/busy"):
            after = parse_qs(parts.query).get("after", [""])[0]
            self._answer(429 if parts.path == "/throttle" else 503, b"slow down", Retry_After=after)
        elif parts.path == "/redirect":
            self._answer(302, Location=f"http://127.0.0.1:{receiver.port}/ok")
        elif parts.path == "/slow":
            receiver.stop.wait(30)
        elif parts.path == "/reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif parts.path == "/huge":
            self._huge(receiver)
        elif parts.path in ("/trickle", "/drip-headers"):
            self._drip(receiver, trickle_body=parts.path == "/trickle")
        else:
            self._answer(404)

    def _drip(self, receiver: Receiver, *, trickle_body: bool) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        if trickle_body:
            self.wfile.write(b"Content-Length: 100\r\n\r\n")
        self.wfile.flush()
        while not receiver.stop.wait(1.0):
            self.wfile.write(b"x")
            self.wfile.flush()

    def _huge(self, receiver: Receiver) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(GIGABYTE))
        self.end_headers()
        chunk = b"y" * 65536
        try:
            for _ in range(GIGABYTE // len(chunk)):
                self.wfile.write(chunk)
                receiver.huge_bytes_sent += len(chunk)
        except OSError:
            self.close_connection = True  # the client stopped reading: as it should


@contextmanager
def receiver(
    host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """A receiver on (host, port) (port 0: a free one) until the block ends."""
    server = _Server((host, port), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.receiver = Receiver(host, server.server_address[1], "https" if tls else "http")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.receiver
    finally:
        server.receiver.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
