"""The load side of bench/webhooks.py: signed requests, the load generators, the server.

- signed Standard Webhooks payment requests (a webhook id of its own each);
- the load generators, each returning a `Measure`: a steady open-loop rate, and saturation
  with wrk (a Lua script cycling through pre-signed requests) or, without wrk, several
  closed-loop connections; both without wrk on bench/raw_http.py's keep-alive asyncio
  connections (an httpx.AsyncClient's pool bookkeeping made the client, not the server,
  the limit);
- `outbox serve` started as a process on its own port and stopped with SIGTERM, and the
  count of stored payment webhooks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import raw_http
from sqlalchemy import Engine, func, select
from standardwebhooks.webhooks import Webhook

from domain.schema import payment_webhooks

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PORT = 18_714

WRK_SCRIPT = r"""
local requests = {}
local n = 0
function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", args[2], {
      ["content-type"] = "application/json",
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
    }, body)
  end
  f:close()
  if #requests == 0 then
    requests[1] = wrk.format("GET", args[2])
  end
end
function request()
  n = n + 1
  return requests[(n - 1) % #requests + 1]
end
function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Measure:
    target: str  # bare | webhooks | write path
    load: str  # steady 300/s | saturation
    per_s: float  # accepted (200) per second
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    failed: int


# -- requests --------------------------------------------------------------------------------


def signed(count: int) -> list[tuple[str, str, str, str]]:
    """(webhook-id, timestamp, signature, body) for `count` distinct payment webhooks."""
    hook = Webhook(SECRET)
    now = datetime.now(UTC)
    stamp = str(int(now.timestamp()))
    out = []
    for n in range(count):
        msg_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps(
            {
                "type": "payment.succeeded",
                "data": {
                    "payment_id": f"pay_{n}_{msg_id[-8:]}",
                    "order_id": f"ord-{n % 5000}",
                    "amount_cents": 1000 + n % 9000,
                    "currency": "EUR",
                },
            }
        )
        out.append((msg_id, stamp, hook.sign(msg_id, now, body), body))
    return out


def headers_of(item: tuple[str, str, str, str]) -> dict[str, str]:
    msg_id, stamp, signature, _ = item
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": signature,
    }


def encoded(host: str, path: str, item: tuple[str, str, str, str] | None) -> bytes:
    """The request for `item` (None: a GET of `path`) to `host` (host:port), ready for
    bench/raw_http.py."""
    if item is None:
        return raw_http.encode("GET", path, host)
    return raw_http.encode("POST", path, host, headers_of(item), item[3].encode())


def _measure(target: str, load: str, tally: raw_http.Tally, elapsed: float) -> Measure:
    latencies = sorted(tally.latencies)
    return Measure(
        target,
        load,
        (len(latencies) - tally.not_ok) / elapsed,
        statistics.median(latencies) * 1000,
        latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        len(latencies),
        tally.not_ok,
    )


# -- load generators -------------------------------------------------------------------------


def steady(base: str, path: str, items: list[Any], rate: float) -> Measure:
    """Open loop (bench/raw_http.py): request i is due at start + i/rate; its latency counts
    from then."""
    url = httpx.URL(base)
    host = url.netloc.decode()
    requests = [encoded(host, path, item) for item in items]
    tally, elapsed = asyncio.run(raw_http.open_loop(url.host, url.port or 80, requests, rate))
    return _measure(
        "bare" if items[0] is None else "webhooks", f"steady {rate:.0f}/s", tally, elapsed
    )


def saturate_wrk(  # noqa: PLR0917 - a benchmark's helper, called once
    base: str, path: str, items: list[Any], seconds: float, connections: int, folder: Path
) -> Measure:
    data = folder / f"requests-{uuid.uuid4().hex}.tsv"
    with data.open("w") as sink:
        for item in items:
            if item is not None:
                sink.write("\t".join(item) + "\n")
    script = folder / "bench.lua"
    script.write_text(WRK_SCRIPT)
    run = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            base,
            "--",
            str(data),
            path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in run.stdout.splitlines() if x.startswith("{"))
    result = json.loads(line)
    ok = result["requests"] - result["non2xx"] - result["socket_errors"]
    return Measure(
        "bare" if items[0] is None else "webhooks",
        f"saturation ({connections} client conns)",
        ok / (result["duration_us"] / 1e6),
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
        result["requests"],
        result["non2xx"] + result["socket_errors"],
    )


def saturate_raw(base: str, path: str, items: list[Any], seconds: float, clients: int) -> Measure:
    """Closed loop without wrk: `clients` keep-alive connections (bench/raw_http.py), each
    sending back to back, cycling through `items`."""
    url = httpx.URL(base)
    host = url.netloc.decode()
    requests = [encoded(host, path, item) for item in items]

    def stream() -> Iterator[bytes]:
        return itertools.cycle(requests)

    tally, elapsed = asyncio.run(
        raw_http.closed_loop(url.host, url.port or 80, stream, seconds, clients)
    )
    return _measure(
        "bare" if items[0] is None else "webhooks",
        f"saturation ({clients} client conns)",
        tally,
        elapsed,
    )


# -- the server ------------------------------------------------------------------------------


class Server:
    def __init__(self, url: str, workers: int, connections: int, log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "PAYMENT_WEBHOOK_SECRETS__STANDARD": SECRET,
            "SERVE_DB_CONNECTIONS": str(max(1, connections // workers)),
            "LOG_LEVEL": "info",
        }
        self.base = f"http://127.0.0.1:{PORT}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "serve",
                "--port",
                str(PORT),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"outbox serve did not become ready; see {log}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def count_webhooks(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(payment_webhooks)).scalar_one())
