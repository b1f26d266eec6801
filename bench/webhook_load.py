"""The load side of bench/webhooks.py: signed requests, the load generators, the server.

- signed Standard Webhooks payment requests (a webhook id of its own each);
- the load generators, each returning a `Measure`: a steady open-loop rate (httpx), and
  saturation with wrk (a Lua script cycling through pre-signed requests) or, without wrk,
  several closed-loop httpx clients;
- `outbox serve` started as a process on its own port and stopped with SIGTERM, and the
  count of stored payment webhooks.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
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


# -- load generators -------------------------------------------------------------------------


async def _steady(base: str, path: str, items: list[Any], rate: float) -> Measure:
    """Open loop: request i is due at start + i/rate; its latency counts from then."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    latencies: list[float] = []
    failed = 0
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def one(i: int, due: float) -> None:
            nonlocal failed
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            item = items[i]
            if item is None:
                response = await client.get(path)
            else:
                response = await client.post(path, content=item[3], headers=headers_of(item))
            latencies.append(time.perf_counter() - due)
            if response.status_code != 200:
                failed += 1

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(i, start + i / rate) for i in range(len(items))))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return Measure(
        "bare" if items[0] is None else "webhooks",
        f"steady {rate:.0f}/s",
        (len(items) - failed) / elapsed,
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99) - 1] * 1000,
        len(items),
        failed,
    )


def steady(base: str, path: str, items: list[Any], rate: float) -> Measure:
    return asyncio.run(_steady(base, path, items, rate))


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


async def _saturate_httpx(
    base: str, path: str, items: list[Any], seconds: float, clients: int
) -> Measure:
    """Closed loop without wrk: `clients` clients, each sending back to back."""
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds
    queue = iter(range(10**9))
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def loop() -> None:
            nonlocal failed
            while time.perf_counter() < deadline:
                item = items[next(queue) % len(items)]
                sent = time.perf_counter()
                if item is None:
                    response = await client.get(path)
                else:
                    response = await client.post(path, content=item[3], headers=headers_of(item))
                latencies.append(time.perf_counter() - sent)
                failed += response.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return Measure(
        "bare" if items[0] is None else "webhooks",
        f"saturation ({clients} httpx clients)",
        (len(latencies) - failed) / elapsed,
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99) - 1] * 1000,
        len(latencies),
        failed,
    )


def saturate_httpx(base: str, path: str, items: list[Any], seconds: float, clients: int) -> Measure:
    return asyncio.run(_saturate_httpx(base, path, items, seconds, clients))


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
