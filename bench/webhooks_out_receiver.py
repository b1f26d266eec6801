"""The receiving end of bench/webhooks_out.py: a process of its own (so that it takes no GIL
from the bench or the dispatcher), a threaded HTTP/1.1 server (keep-alive) on 127.0.0.1.

    python bench/webhooks_out_receiver.py      # prints its port on stdout, then serves

Every POST to a path it was set up with is answered 200 (after `slow[path]` seconds for a
slow one) and recorded: path, webhook-id, the body's event id, `time.time()` on arrival
and whether its Standard Webhooks signature verified (the official `standardwebhooks`
package, against the path's secret: every request, not a sample). Its control paths:

    POST /_setup    {"secrets": {path: whsec}, "slow": {path: seconds}}  (replaces both)
    POST /_reset    forgets what was received
    GET  /_count    {path: requests received}
    GET  /_records  [[path, webhook_id, event_id, at, verified], ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hooks: dict[str, Webhook] = {}
        self.slow: dict[str, float] = {}
        self.records: list[tuple[str, str, str, float, bool]] = []
        self.counts: dict[str, int] = {}


def _event_id(body: bytes) -> str:
    try:
        found = json.loads(body).get("id")
    except (ValueError, AttributeError):
        return ""
    return str(found) if found else ""


def handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would
        # The status line and headers, then the body: two writes, which Nagle's algorithm
        # and the sender's delayed ACK would hold ~40 ms each.
        disable_nagle_algorithm = True

        def _answer(self, status: int, body: bytes = b"ok") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            with state.lock:
                if self.path == "/_count":
                    found: Any = dict(state.counts)
                elif self.path == "/_records":
                    found = list(state.records)
                else:
                    found = None
            if found is None:
                self._answer(404)
            else:
                self._answer(200, json.dumps(found).encode())

        def do_POST(self) -> None:
            at = time.time()
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path == "/_setup":
                setup = json.loads(body)
                with state.lock:
                    state.hooks = {p: Webhook(s) for p, s in setup.get("secrets", {}).items()}
                    state.slow = {p: float(s) for p, s in setup.get("slow", {}).items()}
                self._answer(200)
                return
            if self.path == "/_reset":
                with state.lock:
                    state.records.clear()
                    state.counts.clear()
                self._answer(200)
                return
            with state.lock:
                hook, slow_s = state.hooks.get(self.path), state.slow.get(self.path, 0.0)
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified = False
            if hook is not None:
                try:
                    hook.verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    pass
            record = (self.path, headers.get("webhook-id", ""), _event_id(body), at, verified)
            with state.lock:
                state.records.append(record)
                state.counts[self.path] = state.counts.get(self.path, 0) + 1
            if slow_s:
                time.sleep(slow_s)
            self._answer(200)

        def log_message(self, *args: Any) -> None:
            return

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen()'s backlog: many senders connect at once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    server = Server(("127.0.0.1", args.port), handler(State()))
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
