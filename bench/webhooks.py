"""Webhook benchmark: signed payment webhooks sent to `outbox serve` on PostgreSQL.

Usage::

    .venv/bin/python bench/webhooks.py [--seconds N] [--connections C] [--workers W] [--json]

In one run, against one freshly migrated PostgreSQL database (``outbox_bench_webhooks``):

1. the write path's ``commands/s`` (bench/write_path.py's ``full`` command: the command bus
   committing a state row, its event and its outbox row) on C connections (threads): the
   baseline the goal is set against;
2. ``outbox serve --workers W`` with C database connections in all (C/W per worker),
   logging its JSON line per request as in production, and on it:
   - a bare 200 endpoint of the same server (``GET /healthz``, the same middleware);
   - ``POST /webhooks/payments/standard`` with Standard Webhooks signatures, each with a
     webhook id of its own (every one a new transaction: row, event, outbox row);
   each at a steady 300 requests/s (an open-loop httpx client: a request's latency counts
   from when it was due, so a stalled server cannot hide its queue) and at saturation (wrk
   from Debian's packages with a Lua script cycling through pre-signed requests; without wrk,
   several httpx clients).

Goals (issue 14): p99 <= 25 ms at 300/s; at saturation, accepted webhooks/s >= 0.7x the
write path's commands/s for the same number of connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from write_path import run_for  # noqa: E402
from write_path_variants import full_command  # noqa: E402

from domain.schema import payment_webhooks  # noqa: E402
from pipeline.db import make_engine  # noqa: E402
from pipeline.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from pipeline.migrate import upgrade  # noqa: E402

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench_webhooks"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STEADY_RATE = 300.0
P99_GOAL_MS = 25.0
RATIO_GOAL = 0.7
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
                    "currency": "eur",
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


# -- the server ------------------------------------------------------------------------------


class Server:
    def __init__(self, url: str, workers: int, connections: int, log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "PAYMENT_WEBHOOK_SECRET": SECRET,
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


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    create_database_if_missing(args.url)
    engine = make_engine(args.url, pool_size=args.connections, max_overflow=0)
    drop_all_tables(engine)
    upgrade(engine)
    measures: list[Measure] = []

    command = full_command(engine)
    run_for(command, args.connections, 0.5)
    rates = []
    for _ in range(3):
        done, elapsed = run_for(command, args.connections, args.seconds / 3)
        rates.append(done / elapsed)
    write_path = statistics.median(rates)
    measures.append(
        Measure(
            "write path (full)",
            f"saturation ({args.connections} threads)",
            write_path,
            None,
            None,
            0,
            0,
        )
    )
    console.log(f"write path x{args.connections}: {write_path:,.0f} commands/s")

    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    steady_n = int(STEADY_RATE * args.seconds)
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as folder:
        server = Server(args.url, args.workers, args.connections, Path(folder) / "serve.log")
        try:
            webhook_path = "/webhooks/payments/standard"
            # Warm-up: the workers' pools and code paths.
            steady(server.base, webhook_path, signed(200), 200.0)
            for target, path in (("bare", "/healthz"), ("webhooks", webhook_path)):
                items: list[Any] = [None] * steady_n if target == "bare" else signed(steady_n)
                measures.append(steady(server.base, path, items, STEADY_RATE))
                console.log(measures[-1])
                before = count_webhooks(engine)
                expected = int(args.seconds * 6000)
                items = [None] if target == "bare" else signed(expected)
                if use_wrk:
                    measure = saturate_wrk(
                        server.base,
                        path,
                        items,
                        args.seconds,
                        args.client_connections,
                        Path(folder),
                    )
                else:
                    measure = asyncio.run(_saturate_httpx(server.base, path, items, args))
                measures.append(measure)
                console.log(measure)
                if target == "webhooks":
                    stored = count_webhooks(engine) - before
                    accepted = round(measure.per_s * args.seconds)
                    if measure.requests > len(items):
                        console.log("[yellow]more requests than distinct webhooks: raise the pool")
                    console.log(f"{stored:,} new webhook rows for ~{accepted:,} answers of 200")
        finally:
            server.stop()
    engine.dispose()
    return report(measures, write_path, args, console)


async def _saturate_httpx(
    base: str, path: str, items: list[Any], args: argparse.Namespace
) -> Measure:
    """Closed loop without wrk: `client_connections` clients, each sending back to back."""
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + args.seconds
    queue = iter(range(10**9))
    limits = httpx.Limits(max_connections=args.client_connections)
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
        await asyncio.gather(*(loop() for _ in range(args.client_connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return Measure(
        "bare" if items[0] is None else "webhooks",
        f"saturation ({args.client_connections} httpx clients)",
        (len(latencies) - failed) / elapsed,
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99) - 1] * 1000,
        len(latencies),
        failed,
    )


def report(
    measures: list[Measure], write_path: float, args: argparse.Namespace, console: Console
) -> dict[str, Any]:
    table = Table(title=f"outbox serve --workers {args.workers}, {args.connections} DB connections")
    for name in ("target", "load", "200s per s", "p50 ms", "p99 ms", "requests", "not 200"):
        table.add_column(name, justify="left" if name in ("target", "load") else "right")
    for m in measures:
        table.add_row(
            m.target,
            m.load,
            f"{m.per_s:,.0f}",
            "" if m.p50_ms is None else f"{m.p50_ms:.2f}",
            "" if m.p99_ms is None else f"{m.p99_ms:.2f}",
            f"{m.requests:,}" if m.requests else "",
            str(m.failed) if m.requests else "",
        )
    console.print(table)
    by = {(m.target, m.load.split(" ")[0]): m for m in measures}
    steady_hooks, saturated = by[("webhooks", "steady")], by[("webhooks", "saturation")]
    bare = by[("bare", "saturation")]
    ratio = saturated.per_s / write_path
    goals = {
        "p99_at_300_ms": round(steady_hooks.p99_ms or 0, 2),
        "p99_goal_met": (steady_hooks.p99_ms or 0) <= P99_GOAL_MS,
        "saturation_over_write_path": round(ratio, 3),
        "ratio_goal_met": ratio >= RATIO_GOAL,
        "bare_over_webhooks": round(bare.per_s / saturated.per_s, 2),
    }
    console.print(
        f"p99 at {STEADY_RATE:.0f}/s: {goals['p99_at_300_ms']} ms "
        f"({'meets' if goals['p99_goal_met'] else 'MISSES'} the <= {P99_GOAL_MS:.0f} ms goal); "
        f"saturation: {saturated.per_s:,.0f} webhooks/s = {ratio:.2f}x the write path's "
        f"{write_path:,.0f} commands/s ({'meets' if goals['ratio_goal_met'] else 'MISSES'} "
        f"the >= {RATIO_GOAL}x goal); the bare endpoint answers {goals['bare_over_webhooks']}x "
        "as many"
    )
    return {"measures": [asdict(m) for m in measures], "write_path_per_s": write_path, **goals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--connections", type=int, default=4, help="database connections")
    parser.add_argument("--workers", type=int, default=1, help="outbox serve processes")
    parser.add_argument("--client-connections", type=int, default=32, help="at saturation")
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_POSTGRES_URL", URL))
    parser.add_argument("--no-wrk", action="store_true", help="use httpx even if wrk is there")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    result = run(args, console)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
