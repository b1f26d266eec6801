"""Playing the payment gateway: signed webhook bodies and headers, and a real `outbox serve`
process (uvicorn on 127.0.0.1) to send them to."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

# Test secrets: a Standard Webhooks secret is whsec_ + base64; Stripe's is used as bytes.
OLD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
WRONG_SECRET = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA=="
DOWNLOAD_KEY = "k2:download-signing-key-for-tests-0002"
OLD_DOWNLOAD_KEY = "k1:download-signing-key-for-tests-0001"


def payment_body(
    kind: str, order_id: str, payment_id: str, amount_cents: int | None = None, **data: Any
) -> bytes:
    """A Standard Webhooks payment event (the `standard-webhooks` gateway format), in EUR
    unless `currency` says otherwise."""
    payload: dict[str, Any] = {"payment_id": payment_id, "order_id": order_id, **data}
    payload.setdefault("currency", "EUR")
    if amount_cents is not None:
        payload["amount_cents"] = amount_cents
    return json.dumps({"type": f"payment.{kind}", "data": payload}).encode()


def standard_headers(
    body: bytes, *, secret: str = OLD_SECRET, msg_id: str | None = None, at: float | None = None
) -> dict[str, str]:
    sent = datetime.fromtimestamp(int(at if at is not None else time.time()), tz=UTC)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, sent, body.decode()),
    }


def stripe_body(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:20]}",
            "type": event_type,
            "data": {"object": obj},
        }
    ).encode()


def stripe_headers(
    body: bytes, *, secrets: tuple[str, ...] = (OLD_SECRET,), at: float | None = None
) -> dict[str, str]:
    stamp = str(int(at if at is not None else time.time()))
    signed = stamp.encode() + b"." + body
    v1 = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return {
        "content-type": "application/json",
        "stripe-signature": ",".join([f"t={stamp}", *(f"v1={sig}" for sig in v1)]),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """An `outbox serve` process; `log` is its stderr (one JSON line per request)."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=10)

    def webhook(
        self, body: bytes, headers: dict[str, str], gateway: str = "standard"
    ) -> httpx.Response:
        return self.post(f"/webhooks/payments/{gateway}", body, headers)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def serve_env(database_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        # Each gateway its own ring (the tests sign both with the same two secrets).
        "PAYMENT_WEBHOOK_SECRETS__STANDARD": f"{OLD_SECRET},{NEW_SECRET}",
        "PAYMENT_WEBHOOK_SECRETS__STRIPE": f"{OLD_SECRET},{NEW_SECRET}",
        "DOWNLOAD_SIGNING_KEYS": f"{DOWNLOAD_KEY},{OLD_DOWNLOAD_KEY}",
        "EXPORTS_DIR": str(tmp / "exports"),
        "SERVE_DB_CONNECTIONS": "4",
        "OUTBOX_SHARDS": "8",  # as the test relays (tests.consumer_harness.SHARDS)
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


@contextmanager
def serving(env: dict[str, str], log: Path, *args: str) -> Iterator[Server]:
    """Start `outbox serve` on a free port and wait until /healthz answers."""
    port = free_port()
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port), *args],
            env=env,
            stdout=sink,
            stderr=sink,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"outbox serve exited {process.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("outbox serve did not answer /healthz within 30 s")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
