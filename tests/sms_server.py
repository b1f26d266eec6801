"""A local server speaking the Twilio-style Messages API (stdlib http.server in a thread).

`POST /2010-04-01/Accounts/{sid}/Messages.json`, a form (`To`, `From`, `Body`) with basic
auth: a wrong path, a bad login or a missing field is answered 401/404/400 as the real API
does; otherwise the next answer of `script` (by default 201 with a JSON `sid`), so a test
can ask for 400, 429 or 500 on demand. `sent` lists the messages answered 201.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from pydantic import SecretStr

from jobs.sms import TwilioStyleSms

__all__ = ["ACCOUNT_SID", "AUTH_TOKEN", "FROM", "SmsServer", "sms_server"]

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "tok-5b1f9a77-never-log-me"  # the test server's own
FROM = "+15005550006"


@dataclass
class SmsServer:
    # The status of the n-th request (0-based) that passed the checks; 201 by default.
    script: Callable[[int], int] = lambda _n: 201
    sent: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def provider(self, *, token: str = AUTH_TOKEN, timeout_s: float = 5.0) -> TwilioStyleSms:
        return TwilioStyleSms(
            base_url=self.url,
            account_sid=ACCOUNT_SID,
            auth_token=SecretStr(token),
            from_number=FROM,
            connect_timeout_s=timeout_s,
            timeout_s=timeout_s,
        )

    def to(self, number: str) -> list[str]:
        return [m["Body"] for m in self.sent if m["To"] == number]


def _answer(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextmanager
def sms_server(script: Callable[[int], int] | None = None) -> Iterator[SmsServer]:
    state = SmsServer() if script is None else SmsServer(script=script)
    expected_auth = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode()
            if self.path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
                _answer(self, 404, {"code": 20404, "message": "not found"})
                return
            if self.headers.get("Authorization") != expected_auth:
                _answer(self, 401, {"code": 20003, "message": "authenticate"})
                return
            form = {k: v[0] for k, v in parse_qs(raw, strict_parsing=True).items()}
            if self.headers.get("Content-Type") != "application/x-www-form-urlencoded" or not (
                form.get("To", "").startswith("+") and form.get("From") == FROM and form.get("Body")
            ):
                _answer(self, 400, {"code": 21604, "message": f"bad request {form.get('To')}"})
                return
            with state.lock:
                n = state.requests
                state.requests += 1
            status = state.script(n)
            if status == 201:
                with state.lock:
                    state.sent.append(form)
                    sid = f"SM{len(state.sent):032x}"
                _answer(self, 201, {"sid": sid, "status": "queued", "to": form["To"]})
            else:
                # The real API echoes the number in its errors: the client must not quote it.
                _answer(self, status, {"code": 21211, "message": f"invalid 'To' {form['To']}"})

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `sent` instead."""

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
