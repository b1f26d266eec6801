"""A real local HTTP server that receives webhooks, for the delivery tests: threaded, records
every request (path, headers, body), and answers what the test programmed per path: a list
of answers taken in turn (the last one repeats), each a status code, optionally with a
Retry-After or a delay before it answers.

And `HttpxSender`, a test-only `outbound.ports.Sender` that POSTs with httpx to it (the real
one, outbound.http.WebhookSender, adds the SSRF policy and the capped read).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from outbound.ports import Outcome, SendResult

__all__ = ["Answer", "HttpxSender", "Received", "Receiver"]


@dataclass(frozen=True)
class Answer:
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    gate: threading.Event | None = None  # answer only once it is set (at most 60 s)
    echo: bool = False  # a hostile receiver: the answer repeats the request's headers and body


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """`with Receiver() as r: r.answer("/a", Answer(500), Answer(200)); r.url("/a")`."""

    answers: dict[str, list[Answer]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # Requests being answered per path now, and the most there were at once.
    in_flight: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def answer(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self.answers[path] = list(answers)

    def url(self, path: str) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def _next(self, path: str) -> Answer:
        with self._lock:
            queue = self.answers.get(path) or [Answer()]
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    now = receiver.in_flight[self.path] = receiver.in_flight.get(self.path, 0) + 1
                    receiver.peak[self.path] = max(receiver.peak.get(self.path, 0), now)
                answer = receiver._next(self.path)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                if answer.gate is not None:
                    answer.gate.wait(timeout=60)
                with receiver._lock:  # before the answer: the sender cannot overlap it then
                    receiver.in_flight[self.path] -= 1
                reply = b"ok"
                if answer.echo:
                    reply = str(dict(self.headers.items())).encode() + b"\n" + body
                self.send_response(answer.status)
                if answer.retry_after is not None:
                    self.send_header("Retry-After", answer.retry_after)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


class HttpxSender:
    """POSTs with one reused httpx client; the outcome as ADR 021 decision 5 says."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
        started = time.monotonic()
        try:
            response = self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return SendResult(Outcome.FAILED, None, _ms(started), error=type(exc).__name__)
        code = response.status_code
        retry_after = response.headers.get("retry-after")
        if 200 <= code < 300:
            outcome = Outcome.DELIVERED
        elif code == 410:
            outcome = Outcome.GONE
        elif code in (429, 503):
            outcome = Outcome.THROTTLED
        else:
            outcome = Outcome.FAILED
        return SendResult(
            outcome,
            code,
            _ms(started),
            retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
            excerpt=response.text[:4096],
        )

    def close(self) -> None:
        self.client.close()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
