"""Prune benchmark: `outbox prune` on a large outbox while writers keep committing.

Usage::

    .venv/bin/python bench/prune.py [--rows 1000000] [--writers 4] [--batch-size 10000] [--json]

On PostgreSQL (database ``outbox_bench_prune``, migrated afresh), ``--rows`` published
outbox rows (~300-byte JSON payloads, 1,000 keys) ten days old are pre-filled, plus 10,000
pending rows that must survive. Then, in the same run, each on a freshly filled table:

* ``idle``: the writers alone for a few seconds (their insert+commit time with no prune).
* ``naive``: one ``DELETE FROM outbox WHERE status = 'published' AND created_at < cutoff``
  (the baseline), while the writers commit.
* ``outbox prune``: the real thing (``outbox.prune``: 10,000-id batches, each its own
  transaction), while the writers commit.

Writers: ``--writers`` threads, each committing one outbox row per transaction through
``outbox.append`` (what a command does), as fast as they can. Reported per phase: rows
deleted per second, and the longest single writer insert+commit (the goal: <= 200 ms),
with the writers' p99 and commit count; and the longest wait of a probe updating random
old rows (a row lock held by the delete: what `outbox skip`/`requeue` or a relay mark on
such a row would wait).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from string import Template
from typing import Any

import structlog
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from outbox import Envelope, OutboxStatus, append, outbox_table  # noqa: E402
from outbox.prune import plan, prune  # noqa: E402
from outbox.types import utcnow  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench_prune"
SHARDS = 16
WAIT_GOAL_MS = 200.0
WEEK = timedelta(days=7)

# Server-side fill: a million rows in seconds, shaped like the write path's rows.
FILL_SQL = Template("""
INSERT INTO outbox (event_id, topic, key, shard, type, payload, headers, created_at,
                    available_at, attempts, status, published_at, kafka_partition, kafka_offset)
SELECT gen_random_uuid()::text, 'order-events', 'order-' || lpad((i % 1000)::text, 4, '0'),
       i % 16, 'order.placed',
       '{"order_id":"order-' || (i % 1000) || '","seq":' || i
         || ',"amount_cents":' || (1999 + i % 500) || ','
         || '"currency":"EUR","note":"' || repeat('x', 200) || '"}',
       '{"aggregate_type":"order","correlation_id":"' || gen_random_uuid() || '"}',
       now() - interval '10 days', now() - interval '10 days', 0, '$status',
       $published_at, $partition, $offset
FROM generate_series(1, :rows) AS i
""")
PUBLISHED = {"published_at": "now() - interval '10 days'", "partition": "i % 6", "offset": "i / 6"}
PENDING = dict.fromkeys(PUBLISHED, "NULL")


def fill(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE outbox RESTART IDENTITY"))
        published = FILL_SQL.substitute(status=OutboxStatus.PUBLISHED, **PUBLISHED)
        conn.execute(text(published), {"rows": rows})
        pending = FILL_SQL.substitute(status=OutboxStatus.PENDING, **PENDING)
        conn.execute(text(pending), {"rows": 10_000})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE outbox"))
        # The fill's WAL must not be checkpointed during the measured phase.
        conn.execute(text("CHECKPOINT"))


class Writers:
    """Threads committing one outbox row per transaction; every insert+commit is timed."""

    def __init__(self, engine: Engine, threads: int) -> None:
        self.engine = engine
        self.threads = threads
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self) -> None:
        waits = []
        while not self._stop.is_set():
            env = Envelope(
                event_id=str(uuid.uuid4()),
                topic="order-events",
                key=f"order-{uuid.uuid4().hex[:4]}",
                type="order.placed",
                payload='{"order_id":"x","amount_cents":1999}',
                occurred_at=utcnow(),
            )
            started = time.perf_counter()
            with self.engine.begin() as conn:
                append(conn, [env], shards=SHARDS)
            waits.append(time.perf_counter() - started)
        with self._lock:
            self.waits += waits

    def __enter__(self) -> Writers:
        self._workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join()

    def figures(self) -> dict[str, float]:
        waits = sorted(self.waits) or [0.0]
        return {
            "writer_commits": len(self.waits),
            "writer_max_ms": waits[-1] * 1000,
            "writer_p99_ms": waits[int(len(waits) * 0.99) - 1 if len(waits) > 1 else 0] * 1000,
            "writer_median_ms": statistics.median(waits) * 1000,
        }


class LockProbe:
    """One thread touching a random old row (as `outbox skip`/`requeue` or a relay mark
    would) in its own transaction every 20 ms: how long a row lock held by the delete
    makes such a writer wait."""

    def __init__(self, engine: Engine, rows: int) -> None:
        self.engine = engine
        self.rows = rows
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        rng = random.Random(7)
        while not self._stop.wait(0.02):
            started = time.perf_counter()
            with self.engine.begin() as conn:
                conn.execute(
                    outbox_table.update()
                    .where(outbox_table.c.id == rng.randint(1, self.rows))
                    .values(attempts=outbox_table.c.attempts)
                )
            self.waits.append(time.perf_counter() - started)

    def __enter__(self) -> LockProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def longest_ms(self) -> float:
        return max(self.waits, default=0.0) * 1000


def naive(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                outbox_table.delete().where(
                    outbox_table.c.status == OutboxStatus.PUBLISHED,
                    outbox_table.c.created_at < utcnow() - WEEK,
                )
            ).rowcount
        )


def batched(engine: Engine, batch_size: int) -> int:
    with engine.connect() as conn:
        p = plan(conn, utcnow(), older_than=WEEK, dedup_window=WEEK, count=False)
    return prune(engine, p, batch_size=batch_size).outbox_rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    create_database_if_missing(args.url)
    engine = make_engine(args.url, pool_size=args.writers + 2)
    drop_all_tables(engine)
    upgrade(engine)
    results: dict[str, Any] = {"rows": args.rows, "writers": args.writers}
    say("idle writers (no prune) ...")
    with Writers(engine, args.writers) as idle:
        time.sleep(3)
    results["idle"] = idle.figures()
    for name, run in (("naive", naive), ("prune", lambda e: batched(e, args.batch_size))):
        say(f"filling {args.rows:,} rows ...")
        fill(engine, args.rows)
        say(f"{name} ...")
        with Writers(engine, args.writers) as writers, LockProbe(engine, args.rows) as probe:
            time.sleep(0.5)  # the writers are under way before the delete starts
            started = time.perf_counter()
            deleted = run(engine)
            seconds = time.perf_counter() - started
        with engine.connect() as conn:
            pending = conn.execute(
                select(func.count()).where(
                    outbox_table.c.status == OutboxStatus.PENDING,
                    outbox_table.c.created_at < utcnow() - WEEK,
                )
            ).scalar_one()
        if deleted != args.rows or pending != 10_000:  # the pending rows must survive
            raise SystemExit(f"{name}: deleted {deleted}, pending left {pending}: wrong")
        results[name] = {
            "deleted": deleted,
            "seconds": seconds,
            "rows_per_s": deleted / seconds,
            **writers.figures(),
            "row_lock_probe_max_ms": probe.longest_ms(),
        }
        say(f"{name}: {deleted / seconds:,.0f} rows/s, longest writer wait "
            f"{results[name]['writer_max_ms']:.1f} ms")  # fmt: skip
    results["ratio_prune_vs_naive_rows_per_s"] = (
        results["prune"]["rows_per_s"] / results["naive"]["rows_per_s"]
    )
    return results


def report(results: dict[str, Any]) -> None:
    title = f"prune of {results['rows']:,} rows, {results['writers']} writers"
    table = Table(
        "phase", "rows/s", "seconds", "writer commits", "writer median", "writer p99",
        "longest writer wait", "longest row-lock wait", title=title,
    )  # fmt: skip
    for phase in ("idle", "naive", "prune"):
        r = results[phase]
        goal = f" (goal <= {WAIT_GOAL_MS:.0f})" if phase == "prune" else ""
        table.add_row(
            phase if phase != "prune" else "outbox prune",
            f"{r['rows_per_s']:,.0f}" if "rows_per_s" in r else "-",
            f"{r['seconds']:.1f}" if "seconds" in r else "3.0",
            f"{r['writer_commits']:,}",
            f"{r['writer_median_ms']:.1f} ms",
            f"{r['writer_p99_ms']:.1f} ms",
            f"{r['writer_max_ms']:.1f} ms{goal}",
            f"{r['row_lock_probe_max_ms']:.1f} ms" if "row_lock_probe_max_ms" in r else "-",
        )
    Console(width=140).print(table)
    print(f"prune rows/s vs naive single DELETE: {results['ratio_prune_vs_naive_rows_per_s']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_PRUNE_URL", DEFAULT_URL))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = measure(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
