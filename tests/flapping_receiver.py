"""A real local webhook receiver that flaps, for the flapping test and the chaos run
(bench/chaos_webhooks.py): while it flaps, each request gets at random a 500, a reset
connection (RST, no answer), a slow answer (past the sender's timeout) or a 200; after
`flap_s` (None: for ever; or from `flap_for`) every request gets a 200.

Each request's signature is checked with the official `standardwebhooks` package against
the secret given for its path; every request is recorded (path, webhook-id, the body's event
id, when, what it was answered, whether it verified). `count_pairs` then says, for the
(event, endpoint) pairs expected, how many were delivered (answered 200 and verified), lost,
delivered twice or more, under another webhook-id, or sent to an endpoint after it was
disabled.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from outbound.deliveries import webhook_id_for

__all__ = ["DISABLE_GRACE_S", "FlappingReceiver", "Got", "PairCount", "count_pairs"]

# A send claimed just before an endpoint was disabled may still reach it this long after.
DISABLE_GRACE_S = 5.0


@dataclass(frozen=True)
class Got:
    path: str
    webhook_id: str
    event_id: str
    at: float  # time.time() when it arrived
    answer: str  # ok, 500, reset, slow, unsigned
    verified: bool


@dataclass
class FlappingReceiver:
    """`with FlappingReceiver(seed=1, flap_s=20) as r: r.secret("/a", "whsec_..")`."""

    seed: int = 1
    flap_s: float | None = None
    slow_s: float = 1.5  # longer than the sender's WEBHOOK_TIMEOUT_S
    # While flapping: the chances of a 500, a reset and a slow answer (the rest: 200).
    odds: tuple[float, float, float] = (0.15, 0.08, 0.03)
    got: list[Got] = field(default_factory=list)
    _secrets: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _flap_until: float = 0.0

    def secret(self, path: str, whsec: str) -> None:
        with self._lock:
            self._secrets[path] = whsec

    def url(self, path: str) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def received(self) -> list[Got]:
        with self._lock:
            return list(self.got)

    def flap_for(self, seconds: float) -> None:
        """Flap (again) from now on, for `seconds`."""
        self._flap_until = time.monotonic() + seconds

    def _answer(self, rng: random.Random) -> str:
        if time.monotonic() >= self._flap_until:
            return "ok"
        roll, edge = rng.random(), 0.0
        for name, odds in zip(("500", "reset", "slow"), self.odds, strict=True):
            edge += odds
            if roll < edge:
                return name
        return "ok"

    def _verify(self, path: str, body: bytes, headers: dict[str, str]) -> bool:
        with self._lock:
            whsec = self._secrets.get(path)
        if whsec is None:
            return False
        try:
            Webhook(whsec).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    def __enter__(self) -> FlappingReceiver:
        receiver, rng = self, random.Random(self.seed)
        self._flap_until = float("inf") if self.flap_s is None else time.monotonic() + self.flap_s

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = receiver._verify(self.path, body, headers)
                with receiver._lock:
                    answer = receiver._answer(rng) if verified else "unsigned"
                    receiver.got.append(
                        Got(self.path, headers.get("webhook-id", ""), _event_id(body),
                            time.time(), answer, verified)
                    )  # fmt: skip
                if answer == "reset":  # RST: the sender sees a reset connection
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                if answer == "slow":
                    time.sleep(receiver.slow_s)
                status = {"ok": 200, "500": 500, "slow": 200, "unsigned": 401}[answer]
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    self.close_connection = True  # the sender gave up (a slow answer)

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


def _event_id(body: bytes) -> str:
    try:
        found = json.loads(body).get("id")
    except (ValueError, AttributeError):
        return ""
    return str(found) if found else ""


@dataclass
class PairCount:
    expected: int = 0
    delivered: int = 0  # expected pairs answered 200 at least once, signature verified
    duplicates: int = 0  # pairs delivered more than once (the same webhook-id: dropped)
    lost: list[str] = field(default_factory=list)  # "event@endpoint", the first few
    lost_count: int = 0
    other_webhook_id: int = 0  # requests whose webhook-id is not its pair's
    after_disable: int = 0  # requests to a disabled endpoint, past DISABLE_GRACE_S
    unsigned: int = 0  # requests whose signature did not verify
    requests: int = 0
    answers: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        why = []
        if self.lost_count:
            why.append(f"{self.lost_count} (event, endpoint) pairs lost, e.g. {self.lost[:3]}")
        if self.other_webhook_id:
            why.append(f"{self.other_webhook_id} requests under another webhook-id")
        if self.after_disable:
            why.append(f"{self.after_disable} requests to an endpoint after it was disabled")
        if self.unsigned:
            why.append(f"{self.unsigned} requests whose signature did not verify")
        return why


def count_pairs(
    got: Iterable[Got],
    expected: Iterable[tuple[str, str]],
    endpoint_of: Mapping[str, str],
    disabled_at: Mapping[str, float],
) -> PairCount:
    """`expected`: (event id, path) pairs; `endpoint_of`: path -> endpoint id;
    `disabled_at`: path -> time.time() just after its endpoint's disable committed."""
    got = list(got)
    wanted = set(expected)
    delivered: Counter[tuple[str, str]] = Counter(
        (g.event_id, g.path) for g in got if g.answer in ("ok", "slow") and g.verified
    )
    # A slow answer may have reached the sender too late: only a prompt 200 counts.
    prompt = {(g.event_id, g.path) for g in got if g.answer == "ok" and g.verified}
    lost = sorted(f"{e}@{endpoint_of.get(p, p)}" for e, p in wanted - prompt)
    return PairCount(
        expected=len(wanted),
        delivered=len(wanted & prompt),
        duplicates=sum(1 for pair, n in delivered.items() if pair in wanted and n > 1),
        lost=lost[:10],
        lost_count=len(lost),
        other_webhook_id=sum(
            1
            for g in got
            if g.webhook_id != webhook_id_for(g.event_id, endpoint_of.get(g.path, ""))
        ),
        after_disable=sum(
            1 for g in got if g.at > disabled_at.get(g.path, float("inf")) + DISABLE_GRACE_S
        ),
        unsigned=sum(1 for g in got if not g.verified),
        requests=len(got),
        answers=dict(Counter(g.answer for g in got)),
    )
