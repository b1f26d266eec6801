"""Dashboard benchmark: server time per page and filter on a big PostgreSQL database.

Usage::

    .venv/bin/python bench/dashboard.py [--outbox N] [--inbox N] [--failed N] [--loads K] [--json]
        [--scale F] [--rollup-days D] [--rollup-pairs P]

In one run, on one freshly migrated PostgreSQL database (``outbox_bench_dashboard``):

1. every page and filter of the dashboard is loaded K times on the empty database: the
   baseline (what the app, the templates and the round trips cost by themselves);
2. the database is loaded with 1M outbox rows (98% published, 1.5% pending, 0.5% dead, 6
   topics, 50,000 keys, 16 shards), 1M inbox rows (8 of the application's jobs, 1% retrying
   or failed, over 7 days) and 100k failed jobs (the same jobs, 10 exception classes, over
   30 days), and D days (14) of per-minute rollups for P (20) groups/jobs and the 6 relay
   topics, with their hour rows, as the workers and relays write them (outbox.rollups), with
   server-side INSERT ... SELECT generate_series, then ANALYZE;
3. every page and filter is loaded K times again, the charts included (the overview over
   the last hour, 24 h and 14 days; /history per group and job).

`--scale 0.01` divides the outbox, inbox and failed-job counts by 100 (a quick run on a shared
machine); the rollups keep their D days and P pairs unless told otherwise.

Each load is timed around the request, in process (Starlette's TestClient: no network, the
server's own time plus the client's microseconds), signed in as an operator. The table gives
p50 and p95 per page, the loaded p95 against the empty p95 (the ratio), and the goal
(ADR 011): p95 <= 200 ms for every page and filter. Exit 1 if a page misses it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.logs import configure_logging  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from outbox.schema import failed_jobs_table, inbox_table, outbox_table  # noqa: E402
from outbox.schema_rollups import BUCKETS  # noqa: E402
from tests.dashboard_helpers import OPERATOR, client_for, dashboard_config, sign_in  # noqa: E402

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench_dashboard"
GOAL_MS = 200.0
TOPICS = ["order-events", "product-events", "interaction-events", "tenant-events",
          "payment-events", "analytics.jobs"]  # fmt: skip
# The application's own (group, job) pairs, 8 of them.
PAIRS = [
    ("analytics", "record-interaction"), ("media", "generate-product-blurhash"),
    ("maintenance", "sync-analytics"), ("notifications", "send-appointment-reminder"),
    ("payments", "process-payment-webhook"), ("maintenance", "release-stale-orders"),
    ("maintenance", "audit-tenant-limits"), ("profiles", "enhance-tenant-profile"),
]  # fmt: skip
GROUPS = [g for g, _ in PAIRS]
JOBS = [j for _, j in PAIRS]


def _histogram(prefix: str, centre: str) -> str:
    """Bucket columns of a histogram around bucket `centre` (an SQL expression): a few
    buckets either side with counts that vary by minute, zero elsewhere."""
    return ", ".join(
        f"CASE WHEN abs({i} - ({centre})) <= 3 THEN 1 + (m + {i}) % 5 ELSE 0 END AS {prefix}{i:02d}"
        for i in range(BUCKETS)
    )


def load_rollups(engine: Engine, days: int, pairs: int) -> float:
    """`days` of minute rows ending now for `pairs` (group, job) pairs and the relay's
    topics, then their hour rows summed from them (what the flusher's upsert leaves)."""
    names = [*PAIRS, *((f"bench-{k % 5}", f"bench-job-{k}") for k in range(max(0, pairs - 8)))]
    names = names[:pairs]
    columns = ", ".join(
        ["grain", "at", "kind", "group_name", "job_name", "published", "handled", "failed",
         "retried", "wait_ms_sum", "run_ms_sum",
         *(f"w{i:02d}" for i in range(BUCKETS)), *(f"r{i:02d}" for i in range(BUCKETS))]
    )  # fmt: skip
    started = time.perf_counter()
    with engine.begin() as conn:
        minutes = text(
            f"""
            INSERT INTO job_rollups ({columns})
            SELECT 60, (extract(epoch FROM now())::bigint / 60 - m) * 60, :kind, :g, :j,
                   :pub * (10 + m % 7), :han * (20 + m % 13), :han * (m % 17 = 0)::int,
                   :han * (m % 11 = 0)::int, 40 * (20 + m % 13), 9 * (20 + m % 13),
                   {_histogram("w", ":wc + (m / 240) % 3")}, {_histogram("r", ":rc")}
            FROM generate_series(0, :n - 1) AS m
            """
        )
        for k, (group, job) in enumerate(names):
            shape = {"pub": 0, "han": 1, "wc": 10 + k % 6, "rc": 6 + k % 9}
            conn.execute(minutes, {"kind": "job", "g": group, "j": job, "n": days * 1440, **shape})
        for k, topic in enumerate(TOPICS):
            shape = {"pub": 1, "han": 0, "wc": 8 + k % 4, "rc": -100}  # no run time
            conn.execute(minutes, {"kind": "relay", "g": topic, "j": "", "n": days * 1440, **shape})
        sums = ", ".join(f"sum({c})" for c in columns.split(", ")[5:])
        for grain in (900, 4 * 3600):
            conn.execute(
                text(
                    f"INSERT INTO job_rollups ({columns}) "
                    f"SELECT {grain}, at - at % {grain}, kind, group_name, job_name, {sums} "
                    f"FROM job_rollups WHERE grain = 60 GROUP BY at - at % {grain}, kind, "
                    "group_name, job_name"
                )
            )
    return time.perf_counter() - started


def load(engine: Engine, outbox: int, inbox: int, failed: int) -> dict[str, float]:
    took: dict[str, float] = {}
    with engine.begin() as conn:
        started = time.perf_counter()
        conn.execute(
            text(
                """
            INSERT INTO outbox (event_id, topic, key, shard, type, payload, headers, created_at,
                                available_at, attempts, status, published_at, kafka_partition,
                                kafka_offset, last_error)
            SELECT gen_random_uuid()::text,
                   (ARRAY[:t0, :t1, :t2, :t3, :t4, :t5])[1 + i % 6],
                   'key-' || (i % 50000), i % 16, 'bench.happened',
                   '{"n": ' || i || ', "note": "a row of the benchmark"}', '{}',
                   now() - make_interval(secs => (:n - i) * 0.5),
                   now() - make_interval(secs => (:n - i) * 0.5),
                   CASE WHEN i % 200 = 0 THEN 5 ELSE 0 END,
                   CASE WHEN i % 200 = 0 THEN 'dead'
                        WHEN i > :n - :pending THEN 'pending' ELSE 'published' END,
                   CASE WHEN i % 200 = 0 OR i > :n - :pending THEN NULL
                        ELSE now() - make_interval(secs => (:n - i) * 0.5) END,
                   i % 3, i,
                   CASE WHEN i % 200 = 0 THEN 'broker refused: message too large' END
            FROM generate_series(1, :n) AS i
            """
            ),
            {
                "n": outbox,
                "pending": outbox * 15 // 1000,
                **{f"t{k}": t for k, t in enumerate(TOPICS)},
            },
        )
        took["outbox_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(
            text(
                """
            INSERT INTO inbox (group_name, job_name, message_id, status, attempts, processed_at,
                               payload_digest, tenant_id)
            SELECT (ARRAY[:g0, :g1, :g2, :g3, :g4, :g5, :g6, :g7])[1 + i % 8],
                   (ARRAY[:j0, :j1, :j2, :j3, :j4, :j5, :j6, :j7])[1 + i % 8],
                   gen_random_uuid()::text,
                   CASE WHEN i % 100 = 0 THEN 'retrying' WHEN i % 100 = 1 THEN 'failed'
                        ELSE 'done' END,
                   1 + (i % 100 = 0)::int, now() - make_interval(secs => (:n - i) * 0.6),
                   md5(i::text), 'tenant-' || (i % 1000)
            FROM generate_series(1, :n) AS i
            """
            ),
            {"n": inbox, **{f"g{k}": g for k, g in enumerate(GROUPS)},
             **{f"j{k}": j for k, j in enumerate(JOBS)}},
        )  # fmt: skip
        took["inbox_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(
            text(
                """
            INSERT INTO failed_jobs (group_name, job_name, event_id, type, topic, kafka_partition,
                                     kafka_offset, message_key, payload, payload_encoding,
                                     headers, reason, exception_class, exception_message,
                                     traceback, attempts, failed_at, tenant_id)
            SELECT (ARRAY[:g0, :g1, :g2, :g3, :g4, :g5, :g6, :g7])[1 + i % 8],
                   (ARRAY[:j0, :j1, :j2, :j3, :j4, :j5, :j6, :j7])[1 + i % 8],
                   gen_random_uuid()::text, 'bench.happened', 'order-events', i % 3, i,
                   'key-' || (i % 50000),
                   '{"n": ' || i || ', "customer_email": "someone@example.com"}', 'utf-8', '{}',
                   'exception', 'Bench' || (i % 10) || 'Error',
                   'the job failed for message ' || i,
                   repeat('  File "consumers/attempt.py", line 200, in run\\u000a', 20),
                   3, now() - make_interval(secs => (:n - i) * 26), 'tenant-' || (i % 500)
            FROM generate_series(1, :n) AS i
            """
            ),
            {"n": failed, **{f"g{k}": g for k, g in enumerate(GROUPS)},
             **{f"j{k}": j for k, j in enumerate(JOBS)}},
        )  # fmt: skip
        took["failed_s"] = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    return took


def pages(engine: Engine) -> list[tuple[str, str]]:
    """(label, path) of every page and filter, with ids that exist in the loaded data."""
    with engine.connect() as conn:
        failed_row = conn.execute(
            select(failed_jobs_table.c.id, failed_jobs_table.c.event_id)
            .order_by(failed_jobs_table.c.id.desc())
            .offset(500)
            .limit(1)
        ).first()
        outbox_id = conn.execute(
            select(outbox_table.c.id).order_by(outbox_table.c.id.desc()).offset(777).limit(1)
        ).scalar()
        inbox_id = conn.execute(
            select(inbox_table.c.message_id).order_by(inbox_table.c.processed_at.desc()).offset(999).limit(1)
        ).scalar()  # fmt: skip
    fid, fevent = (failed_row.id, failed_row.event_id) if failed_row else (1, "none")
    oid = outbox_id or 1
    return [
        ("overview", "/"),
        ("overview refresh", "/partials/overview"),
        ("jobs", "/jobs"),
        ("jobs: group", "/jobs?group=analytics"),
        ("jobs: job", "/jobs?job=sync-analytics"),
        ("jobs: state failed", "/jobs?state=failed"),
        ("jobs: since 1h", "/jobs?since=1h"),
        ("jobs: search event id", f"/jobs?search={inbox_id or 'none'}"),
        ("jobs: search key", "/jobs?search=key-4242"),
        ("jobs: search tenant", "/jobs?search=tenant-42"),
        ("waiting", "/waiting"),
        ("failed", "/failed"),
        ("failed: group", "/failed?group=payments"),
        ("failed: job", "/failed?job=sync-analytics"),
        ("failed: exception", "/failed?exception=Bench7Error"),
        ("failed: since 24h", "/failed?since=24h"),
        (
            "failed: group+job+exception",
            "/failed?group=media&job=generate-product-blurhash&exception=Bench1Error",
        ),
        ("failed: search event id", f"/failed?search={fevent}"),
        ("failed: search key", "/failed?search=key-4242"),
        ("failed: search tenant", "/failed?search=tenant-42"),
        ("failed: page 200", f"/failed?before={max(1, fid - 10_000)}"),
        ("failed job", f"/failed/{fid}"),
        ("failed job + payload", f"/failed/{fid}?payload=1"),
        ("batches", "/batches"),
        ("outbox", "/outbox"),
        ("outbox: pending", "/outbox?status=pending"),
        ("outbox: dead", "/outbox?status=dead"),
        ("outbox: published", "/outbox?status=published"),
        ("outbox: topic", "/outbox?topic=tenant-events"),
        ("outbox: topic+pending", "/outbox?topic=payment-events&status=pending"),
        ("outbox: key", "/outbox?key=key-4242"),
        ("outbox: old page", f"/outbox?before={max(1, oid - 500_000)}"),
        ("outbox row", f"/outbox/{oid}"),
        ("scheduler", "/scheduler"),
        ("audit", "/audit"),
        ("overview: charts 24h", "/?span=24h"),
        ("overview: charts 14d", "/?span=14d"),
        ("history", "/history"),
        ("history: every job 14d", "/history?span=14d"),
        ("history: group 1h", "/history?group=analytics"),
        ("history: group 24h", "/history?group=maintenance&span=24h"),
        ("history: group 14d", "/history?group=maintenance&span=14d"),
        ("history: job 24h", "/history?group=analytics&job=record-interaction&span=24h"),
        ("history: job 14d", "/history?group=analytics&job=record-interaction&span=14d"),
    ]


def measure(
    engine: Engine, targets: list[tuple[str, str]], loads: int, *, empty: bool = False
) -> dict[str, list[float]]:
    """Times per page; on the empty database a row's page is its 404 (no such row)."""
    client = client_for(dashboard_config(engine, lag=list))
    sign_in(client, OPERATOR)
    found: dict[str, list[float]] = {}
    for label, path in targets:
        client.get(path)  # warm: plans, templates
        times = []
        for _ in range(loads):
            started = time.perf_counter()
            answer = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200 and not (empty and answer.status_code == 404):
                raise SystemExit(f"{label}: {path} answered {answer.status_code}")
        found[label] = times
    return found


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_POSTGRES_URL", URL))
    parser.add_argument("--outbox", type=int, default=1_000_000)
    parser.add_argument("--inbox", type=int, default=1_000_000)
    parser.add_argument("--failed", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=30)
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the outbox, inbox and failed counts (0.01: a quick run)",
    )
    parser.add_argument("--rollup-days", type=int, default=14)
    parser.add_argument("--rollup-pairs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.outbox, args.inbox, args.failed = (
        max(1, int(n * args.scale)) for n in (args.outbox, args.inbox, args.failed)
    )
    console = Console(stderr=args.json)
    configure_logging("warning", "console")
    create_database_if_missing(args.url)
    engine = make_engine(args.url, pool_size=4)
    drop_all_tables(engine)
    upgrade(engine)
    targets = pages(engine)
    console.print(f"baseline: {len(targets)} pages and filters on the empty database ...")
    empty = measure(engine, targets, args.loads, empty=True)
    console.print(
        f"loading {args.outbox:,} outbox, {args.inbox:,} inbox, {args.failed:,} failed ..."
    )
    took = load(engine, args.outbox, args.inbox, args.failed)
    console.print(f"loading {args.rollup_days} days of rollups for {args.rollup_pairs} jobs ...")
    took["rollups_s"] = load_rollups(engine, args.rollup_days, args.rollup_pairs)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE job_rollups"))
        took["rollup_rows"] = float(
            conn.execute(text("SELECT count(*) FROM job_rollups")).scalar_one()
        )
    console.print(", ".join(f"{k} {v:.1f}" for k, v in took.items()))
    targets = pages(engine)
    loaded = measure(engine, targets, args.loads)
    rows = []
    for label, path in targets:
        base, big = p95(empty[label]), p95(loaded[label])
        rows.append({
            "page": label, "path": path, "empty_p95_ms": round(base, 2),
            "p50_ms": round(statistics.median(loaded[label]), 2), "p95_ms": round(big, 2),
            "ratio": round(big / base, 2) if base else None, "goal_met": big <= GOAL_MS,
        })  # fmt: skip
    worst = max(rows, key=lambda r: r["p95_ms"])
    if args.json:
        print(json.dumps({"rows": rows, "load_s": took, "worst": worst}, indent=2))
    else:
        table = Table(title=f"Dashboard server time, {args.loads} loads each (ms)")
        for column in ("page", "empty p95", "p50", "p95", "loaded/empty", "<= 200 ms"):
            table.add_column(column, justify="left" if column == "page" else "right")
        for r in rows:
            table.add_row(
                r["page"], f"{r['empty_p95_ms']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
                f"{r['ratio']:.2f}x", "yes" if r["goal_met"] else "[red]NO[/red]",
            )  # fmt: skip
        console.print(table)
        console.print(f"worst: {worst['page']} p95 {worst['p95_ms']:.1f} ms (goal {GOAL_MS:.0f})")
    return 0 if all(r["goal_met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
