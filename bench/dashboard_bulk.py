"""Bulk retry and substring search at 100k failed jobs, on PostgreSQL.

Usage::

    .venv/bin/python bench/dashboard_bulk.py [--url URL] [--failed N] [--loads K] [--chunk C]

In one run, on a freshly migrated database (it drops every table of the one given):

1. N failed jobs are loaded as bench/dashboard.py loads them (8 jobs, 10 exception
   classes, 500 tenants, over 30 days), then ANALYZE;
2. the substring searches are loaded K times each (key, event id or message fragment;
   payload), p50 and p95 printed with the exact-filter page as the same-run baseline;
3. a bulk retry of all N runs in the background (the dashboard's own code, C rows per
   transaction) while /failed and /audit are loaded in a loop: the run's duration, its
   rows per second and the pages' p95 and worst time during it are printed.

Figures, not assertions: ADR 018 (stream b's notes) keeps them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, select, text
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.dashboard import GROUPS, load  # noqa: E402
from consumers.groups import Group  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from outbox.bulk_runs import bulk_runs_table  # noqa: E402
from outbox.types import utcnow  # noqa: E402
from tests.dashboard_helpers import OPERATOR, client_for, dashboard_config, sign_in  # noqa: E402
from web.dashboard import bulk  # noqa: E402
from web.dashboard.failed_jobs import Acted, FailedQuery  # noqa: E402

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench_dashboard"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def timed(client: TestClient, path: str, loads: int) -> list[float]:
    found = []
    for _ in range(loads):
        started = time.perf_counter()
        answer = client.get(path)
        found.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=URL)
    parser.add_argument("--failed", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=bulk.CHUNK)
    args = parser.parse_args()
    create_database_if_missing(args.url)
    engine: Engine = make_engine(args.url)
    drop_all_tables(engine)
    upgrade(engine)
    started = time.perf_counter()
    load(engine, 0, 0, args.failed)
    print(f"loaded {args.failed:,} failed jobs in {time.perf_counter() - started:.1f} s")
    groups = {g: Group(g, (f"{g}-events",)) for g in sorted(set(GROUPS))}
    config = dashboard_config(engine, groups=groups, bulk_chunk=args.chunk)
    client = client_for(config)
    sign_in(client, OPERATOR)
    print(f"{'page':<40} {'p50 ms':>8} {'p95 ms':>8}")
    for label, path in (
        ("failed: exception (exact, baseline)", "/failed?exception=Bench7Error"),
        ("failed: search key fragment", "/failed?search=ey-4242"),
        ("failed: search message fragment", "/failed?search=message+4242"),
        ("failed: search rare fragment", "/failed?search=zzz-nowhere"),
        ("failed: search payload", "/failed?search=%22n%22%3A+4242%2C&payloads=1"),
        ("outbox: search key fragment", "/outbox?search=ey-42"),
    ):
        times = timed(client, path, args.loads)
        print(f"{label:<40} {statistics.median(times):>8.1f} {p95(times):>8.1f}")

    with engine.connect() as conn:
        shown = bulk.preview(conn, "retry", FailedQuery(), groups)
    acted = Acted(OPERATOR[0], "bench: retry everything", None, utcnow())
    during: list[float] = []
    stop = threading.Event()

    def browse() -> None:
        while not stop.is_set():
            during.extend(timed(client, "/failed", 1) + timed(client, "/audit", 1))

    browser = threading.Thread(target=browse, daemon=True)
    browser.start()
    started = time.perf_counter()
    run_id = bulk.start(
        engine, shown, groups=groups, shards=8, acted=acted, chunk=args.chunk, background=False
    )
    took = time.perf_counter() - started
    stop.set()
    browser.join(timeout=30)
    with engine.connect() as conn:
        run = conn.execute(select(bulk_runs_table).where(bulk_runs_table.c.id == run_id)).one()
        left = conn.execute(text("SELECT count(*) FROM failed_jobs")).scalar()
    print(
        f"bulk retry: {run.done:,} of {run.total:,} ({run.state}) in {took:.1f} s, "
        f"{run.done / took:,.0f} rows/s, chunks of {args.chunk}; {left} failed jobs left"
    )
    print(
        f"pages during the run: {len(during)} loads, p50 {statistics.median(during):.1f} ms, "
        f"p95 {p95(during):.1f} ms, worst {max(during):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
