"""bench/raw_http.py, the benchmarks' load client, against a real local HTTP/1.1 server
(keep-alive, a thread per connection): every request answered and counted once, the answers
that are not 200 counted apart, the open loop's latency counted from when a request was due,
and an answer the client does not understand refused loudly rather than miscounted."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import raw_http


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, bytes]] = []
    lock = threading.Lock()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.lock:
            self.seen.append((self.command, self.path, body))
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"2\r\nok\r\n0\r\n\r\n")
            return
        if self.path == "/slow":
            time.sleep(0.2)
        answer = b'{"status": "ok"}'
        self.send_response(503 if self.path == "/busy" else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_open_loop_sends_each_request_once_and_counts_what_is_not_200(
    server: tuple[str, int],
) -> None:
    host, port = server
    requests = [
        raw_http.encode("POST", "/ok" if n % 4 else "/busy", host, {"x-n": str(n)}, b"n=%d" % n)
        for n in range(40)
    ]
    tally, elapsed = asyncio.run(raw_http.open_loop(host, port, requests, 400.0, connections=4))
    assert len(tally.latencies) == 40
    assert tally.not_ok == 10  # every fourth went to /busy
    assert sorted(body for _, _, body in _Handler.seen) == sorted(b"n=%d" % n for n in range(40))
    assert all(latency >= 0 for latency in tally.latencies)
    assert elapsed >= 39 / 400.0  # the last one was not due before then


def test_the_open_loop_counts_a_slow_answer_from_when_it_was_due(
    server: tuple[str, int],
) -> None:
    host, port = server
    # One connection, two requests due 10 ms apart, each answered after 200 ms: the
    # second waits for the first, and that wait is part of its latency.
    requests = [raw_http.encode("GET", "/slow", host) for _ in range(2)]
    tally, _ = asyncio.run(raw_http.open_loop(host, port, requests, 100.0, connections=1))
    assert sorted(tally.latencies)[-1] >= 0.35


def test_the_closed_loop_keeps_each_connection_busy_until_the_time_is_up(
    server: tuple[str, int],
) -> None:
    host, port = server
    requests = [raw_http.encode("GET", "/ok", host), raw_http.encode("GET", "/busy", host)]

    def stream() -> Iterator[bytes]:
        return itertools.cycle(requests)

    tally, elapsed = asyncio.run(raw_http.closed_loop(host, port, stream, 0.3, clients=3))
    assert elapsed >= 0.3
    assert len(tally.latencies) == len(_Handler.seen) >= 6
    assert 0 < tally.not_ok < len(tally.latencies)


def test_an_answer_it_cannot_read_is_refused_not_counted(server: tuple[str, int]) -> None:
    host, port = server
    requests = [raw_http.encode("GET", "/chunked", host)]
    with pytest.raises(raw_http.ProtocolError, match="chunked"):
        asyncio.run(raw_http.open_loop(host, port, requests, 10.0, connections=1))


def test_a_request_is_encoded_with_its_length_and_headers() -> None:
    raw = raw_http.encode("POST", "/p", "h:1", {"content-type": "application/json"}, b"{}")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"{}"
    assert head.split(b"\r\n") == [
        b"POST /p HTTP/1.1",
        b"host: h:1",
        b"content-length: 2",
        b"content-type: application/json",
    ]
