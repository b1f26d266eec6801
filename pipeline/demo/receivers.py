"""The demo's local counterparts of the outside world, real HTTP servers on 127.0.0.1 in the
demo's process (threads): a tenant's webhook receiver that checks every delivery's signature
with the official `standardwebhooks` package, and an SMS API of the Twilio Messages shape.

    with WebhookReceiver({"/ok": [200], "/flaky": [500, 200]}) as hooks, SmsApi() as sms:
        hooks.secrets["/ok"] = "whsec_..."     # the endpoint's secret, shown once at add
        ... hooks.received["/flaky"]           # [(500, True), (200, True)]: status, verified
        ... sms.messages                       # [{"To": ..., "From": ..., "Body": ...}]

Every socket wait is bounded (`TIMEOUT_S` per request); neither server prints anything.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["SmsApi", "WebhookReceiver"]

# A request's socket reads and writes; the most of a body either server reads.
TIMEOUT_S = 5.0
MAX_BODY = 1024 * 1024

# (path, lower-case headers, body) -> (status, JSON answer)
Answer = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, Any]]]


class _Local:
    """A threaded HTTP server on a free port of 127.0.0.1 that answers POSTs with `answer`."""

    def __init__(self, answer: Answer) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = TIMEOUT_S

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if 0 <= length <= MAX_BODY:
                    body = self.rfile.read(length)
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    status, reply = answer(self.path, headers, body)
                else:
                    status, reply = 400, {"error": "a Content-Length of 0 to 1 MiB, please"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the demo prints what it recorded instead."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=TIMEOUT_S)


class WebhookReceiver:
    """Answers each path's statuses in turn (the last one repeats) and records, per path,
    (the status answered, whether the signature verified against `secrets[path]`)."""

    def __init__(self, script: dict[str, list[int]]) -> None:
        self.script = {path: list(statuses) for path, statuses in script.items()}
        self.secrets: dict[str, str] = {}
        self.received: dict[str, list[tuple[int, bool]]] = {path: [] for path in script}
        self._local = _Local(self._answer)

    def url(self, path: str) -> str:
        return self._local.base + path

    def _answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        with self._local.lock:
            queue = self.script.get(path)
            if queue is None:
                return 404, {"error": "no such hook"}
            status = queue.pop(0) if len(queue) > 1 else queue[0]
            secret = self.secrets.get(path)
        verified = False
        if secret is not None:
            try:
                Webhook(secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                pass
        with self._local.lock:
            self.received[path].append((status, verified))
        return status, {"received": verified}

    def __enter__(self) -> Self:
        self._local.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._local.stop()


class SmsApi:
    """`POST /2010-04-01/Accounts/{sid}/Messages.json`, a form (To, From, Body) with basic
    auth (the sid and a token made for this run): 201 with a message `sid`, as the real
    API answers; 404 for another path, 401 for another login, 400 for a bad form."""

    def __init__(self) -> None:
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_urlsafe(24)  # a secret: never printed
        self.messages: list[dict[str, str]] = []
        self._local = _Local(self._answer)

    @property
    def url(self) -> str:
        return self._local.base

    def _answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        if path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return 404, {"code": 20404, "message": "The requested resource was not found"}
        login = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if headers.get("authorization") != f"Basic {login}":
            return 401, {"code": 20003, "message": "Authenticate"}
        try:
            form = {k: v[0] for k, v in parse_qs(body.decode(), strict_parsing=True).items()}
        except (UnicodeDecodeError, ValueError):
            form = {}
        if not (form.get("To", "").startswith("+") and form.get("From") and form.get("Body")):
            return 400, {"code": 21604, "message": "A 'To', 'From' and 'Body' are required"}
        with self._local.lock:
            self.messages.append(form)
            sid = f"SM{len(self.messages):032x}"
        return 201, {"sid": sid, "status": "queued"}

    def __enter__(self) -> Self:
        self._local.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._local.stop()
