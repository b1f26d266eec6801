"""A fake OpenAI-compatible chat-completions endpoint on 127.0.0.1 (stdlib http.server in a
thread), scripted per request: status, body, and how long to wait before answering."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "ProfileServer", "completion", "free_port", "profile_server"]

SECRET_KEY = "sk-test-3f9c1b7e-never-log-me"


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    wait_s: float = 0.0


def completion(content: Any) -> bytes:
    """A chat-completions answer whose message content is `content` (JSON-encoded unless
    it is text already)."""
    text = content if isinstance(content, str) else json.dumps(content)
    return json.dumps(
        {"id": "c-1", "object": "chat.completion", "choices": [{"message": {"content": text}}]}
    ).encode()


@dataclass
class ProfileServer:
    script: Callable[[int], Answer]
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def profile_server(script: Callable[[int], Answer]) -> Iterator[ProfileServer]:
    """Serve `script(n)` for the n-th request (0-based) until the block ends."""
    state = ProfileServer(script)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            n = len(state.requests)
            state.requests.append((dict(self.headers), body))
            answer = state.script(n)
            time.sleep(answer.wait_s)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except OSError:
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `requests` instead."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
