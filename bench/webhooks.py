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
   each at a steady 300 requests/s (an open-loop client on 64 keep-alive connections,
   bench/raw_http.py: a request's latency counts from when it was due, so a stalled server
   cannot hide its queue) and at saturation (wrk from Debian's packages with a Lua script
   cycling through pre-signed requests; without wrk, bench/raw_http.py's closed loop).

Goals (ADR 007): p99 <= 25 ms at 300/s; at saturation, accepted webhooks/s >= 0.7x the
write path's commands/s for the same number of connections.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webhook_load import (  # noqa: E402
    Measure,
    Server,
    count_webhooks,
    saturate_raw,
    saturate_wrk,
    signed,
    steady,
)
from write_path import run_for  # noqa: E402
from write_path_variants import full_command  # noqa: E402

from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench_webhooks"
STEADY_RATE = 300.0
P99_GOAL_MS = 25.0
RATIO_GOAL = 0.7


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
                    measure = saturate_raw(
                        server.base, path, items, args.seconds, args.client_connections
                    )
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
    parser.add_argument("--no-wrk", action="store_true", help="no wrk: bench/raw_http.py")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    result = run(args, console)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
