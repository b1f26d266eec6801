"""Held-xmin benchmark: the relay's claim and the outbox's size while a transaction elsewhere
holds PostgreSQL's xmin horizon.

Usage::

    .venv/bin/python bench/xmin.py [--hold-s 300] [--rate 1000] [--before-s 150]
                                   [--retention-s 60] [--after-s 150] [--claim cursor|bottom]
                                   [--json]

On PostgreSQL (database ``outbox_bench_x``, migrated afresh) and the embedded broker (Tansu),
in one run: a writer thread commits ``--rate`` outbox rows a second (10 per transaction,
through ``outbox.append``, so each commit notifies the relay); one ``Relay`` (16 shards, the
real kafka-python publisher) publishes them; ``outbox.prune`` runs every 10 s with a
retention of ``--retention-s`` (the bench's short retention); autovacuum runs as
configured. The partitions are ``--partition-ids`` wide (default: half the rows written
in a retention period). After ``--before-s`` a REPEATABLE READ transaction takes a
snapshot and stays open ``--hold-s`` (it touches no outbox table: a report on other tables
does the same to VACUUM); then ``--after-s`` more.

Printed per phase (before / during / after the hold), as ratios against "before" in the same
run and in absolute figures: rows published per second, the relay's claim time (p50/p95/max,
the time of `relay.store.claim` as the relay calls it), its batch time (claim + send +
flush + mark, p95), and the buffers one shard's claim reads (EXPLAIN ANALYZE BUFFERS every
5 s: from the relay's cursor, and from the bottom as the claim did before ADR 013). Then
the table's heap and index sizes (every partition) and dead tuples over time: before, at
the end of the hold, one retention period (+ a prune interval) after it, and at the end.
Goal (ADR 013): claim time and throughput during the hold within 1.5x of before; the size
back to its steady state within a retention period after the hold.

``--claim bottom`` runs the relay with its cursor pinned at 0 (every claim from the bottom
of the shard, as before ADR 013), for comparison.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.broker import EmbeddedBroker  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from outbox import Envelope, append, partitions  # noqa: E402
from outbox.prune import plan, prune  # noqa: E402
from outbox.types import utcnow  # noqa: E402
from relay import Relay, RelayConfig, ensure_topics, store  # noqa: E402
from relay.claiming import Claimer  # noqa: E402
from relay.kafka import KafkaPublisher  # noqa: E402
from relay.pipeline import Decided  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench_x"
SHARDS = 16
TOPIC = "bench-xmin"
GOAL = 1.5
PHASES = ("before", "during", "after")


class Recorder:
    """Timings and samples tagged with the phase they fell in."""

    def __init__(self) -> None:
        self.phase = "before"
        self.claims: dict[str, list[float]] = {p: [] for p in PHASES}
        self.batches: dict[str, list[float]] = {p: [] for p in PHASES}
        self.published: dict[str, int] = dict.fromkeys(PHASES, 0)
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.buffers: dict[str, list[tuple[int, int]]] = {p: [] for p in PHASES}
        self.sizes: list[dict[str, Any]] = []
        self.stop = threading.Event()


def instrument(relay: Relay, rec: Recorder) -> None:
    """Time the relay's claims (relay.store.claim as relay.claiming calls it) and batches."""
    real_claim = store.claim

    def timed_claim(*args: Any, **kwargs: Any) -> list[store.Claimed]:
        started = time.perf_counter()
        rows = real_claim(*args, **kwargs)
        rec.claims[rec.phase].append((time.perf_counter() - started) * 1000)
        return rows

    store.claim = timed_claim  # type: ignore[assignment]
    real_send = relay._send

    def timed_send(*args: Any) -> Decided:
        started = time.perf_counter()
        decided = real_send(*args)
        rec.batches[rec.phase].append((time.perf_counter() - started) * 1000)
        rec.published[rec.phase] += len(decided.acks)
        return decided

    relay._send = timed_send  # type: ignore[method-assign]


def writer(engine: Engine, rate: int, rec: Recorder) -> None:
    per_tx, interval = 10, 10 / rate
    filler = "x" * 170
    n, next_at = 0, time.monotonic()
    while not rec.stop.is_set():
        envs = []
        for _ in range(per_tx):
            key = f"order-{n % 1000:04d}"
            payload = json.dumps({"order_id": key, "seq": n, "note": filler})
            envs.append(
                Envelope(str(uuid.uuid4()), TOPIC, key, "order.placed", payload, utcnow(), {})
            )
            n += 1
        with engine.begin() as conn:
            append(conn, envs, shards=SHARDS)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def pruner(engine: Engine, retention_s: float, rec: Recorder) -> None:
    keep = timedelta(seconds=retention_s)
    while not rec.stop.wait(10):
        with engine.connect() as conn:
            p = plan(conn, utcnow(), older_than=keep, dedup_window=keep, count=False)
        prune(engine, p)


def holder(engine: Engine, hold_s: float, rec: Recorder) -> None:
    """A transaction whose snapshot holds the xmin horizon for `hold_s` seconds."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.execute(text("SELECT 1"))
        rec.stop.wait(hold_s)
        conn.rollback()


# Every partition of the outbox, or the table itself when it is not partitioned.
SIZES = """
WITH leaves AS (
  SELECT relid FROM pg_partition_tree('outbox') WHERE isleaf
  UNION ALL SELECT c.oid FROM pg_class AS c WHERE c.oid = 'outbox'::regclass AND c.relkind = 'r'
)
SELECT coalesce(sum(pg_relation_size(t.relid)), 0), coalesce(sum(pg_indexes_size(t.relid)), 0),
       coalesce(sum(s.n_dead_tup), 0), count(*)
FROM leaves AS t LEFT JOIN pg_stat_user_tables AS s ON s.relid = t.relid
"""
EXPLAIN = (
    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM outbox WHERE status = 'pending' "
    "AND shard = 0 AND id >= :c ORDER BY id LIMIT 100"
)


def _buffers(conn: Any, cursor: int) -> int:
    plan_json = conn.execute(text(EXPLAIN), {"c": cursor}).scalar_one()
    top = plan_json[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


def sampler(engine: Engine, relay: Relay, rec: Recorder, started: float) -> None:
    while not rec.stop.wait(5):
        with engine.connect() as conn:
            heap, idx, dead, parts = conn.execute(text(SIZES)).one()
            cursor = relay._claimer.cursors.positions().get(0, 0)
            rec.buffers[rec.phase].append((_buffers(conn, cursor), _buffers(conn, 0)))
            conn.rollback()
        rec.sizes.append(
            {
                "t_s": round(time.monotonic() - started),
                "phase": rec.phase,
                "heap_mb": round(float(heap) / 2**20, 1),
                "index_mb": round(float(idx) / 2**20, 1),
                "dead": int(dead),
                "partitions": int(parts),
            }
        )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    create_database_if_missing(args.url)
    engine = make_engine(args.url, pool_size=8)
    drop_all_tables(engine)
    upgrade(engine)
    # The bench's short retention wants narrow partitions: the migration's are 1,000,000 ids.
    width = args.partition_ids or max(1_000, int(args.rate * args.retention_s / 2))
    with engine.begin() as conn:
        for part in partitions.partitions(conn)[1:]:
            conn.execute(text(f"DROP TABLE {part.name}"))
    partitions.ensure_ahead(engine, width=width)
    rec = Recorder()
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, {TOPIC: 6})
        config = RelayConfig(shards=SHARDS, topics=(TOPIC,), stats_interval_s=None)
        relay = Relay(engine, lambda: KafkaPublisher(bootstrap, client_id="bench-xmin"), config)
        if args.claim == "bottom":
            relay._claimer = Claimer(engine, config.batch_size, settle_s=float("inf"))
        instrument(relay, rec)
        started = time.monotonic()
        threads = [
            threading.Thread(target=relay.run, daemon=True),
            threading.Thread(target=writer, args=(engine, args.rate, rec), daemon=True),
            threading.Thread(target=pruner, args=(engine, args.retention_s, rec), daemon=True),
            threading.Thread(target=sampler, args=(engine, relay, rec, started), daemon=True),
        ]
        for t in threads:
            t.start()
        time.sleep(args.before_s)
        rec.phase = "during"
        hold = threading.Thread(target=holder, args=(engine, args.hold_s, rec), daemon=True)
        hold.start()
        t0 = time.monotonic()
        hold.join(args.hold_s + 5)
        rec.seconds["during"] = time.monotonic() - t0
        rec.phase = "after"
        time.sleep(args.after_s)
        rec.seconds["before"] = args.before_s
        rec.seconds["after"] = args.after_s
        rec.stop.set()
        relay.stop()
        threads[0].join(30)
    hold_end = args.before_s + rec.seconds["during"]
    return summarise(rec, args, hold_end)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(rec: Recorder, args: argparse.Namespace, hold_end: float) -> dict[str, Any]:
    phases: dict[str, dict[str, float]] = {}
    for p in PHASES:
        claims, batches, bufs = rec.claims[p], rec.batches[p], rec.buffers[p]
        phases[p] = {
            "published_per_s": rec.published[p] / max(rec.seconds[p], 1e-9),
            "claim_p50_ms": statistics.median(claims) if claims else float("nan"),
            "claim_p95_ms": _pct(claims, 0.95),
            "claim_max_ms": max(claims, default=float("nan")),
            "batch_p95_ms": _pct(batches, 0.95),
            "buffers_cursor_p50": statistics.median(b[0] for b in bufs) if bufs else 0,
            "buffers_cursor_max": max((b[0] for b in bufs), default=0),
            "buffers_bottom_p50": statistics.median(b[1] for b in bufs) if bufs else 0,
        }
    base = phases["before"]
    ratios = {
        p: {k: (v / base[k] if base[k] else float("nan")) for k, v in phases[p].items()}
        for p in ("during", "after")
    }
    steady = [s for s in rec.sizes if s["phase"] == "before"][-1:] or rec.sizes[:1]
    back_at = hold_end + args.retention_s + 10
    after_ret = [s for s in rec.sizes if s["t_s"] >= back_at][:1]
    peak = max(rec.sizes, key=lambda s: s["heap_mb"] + s["index_mb"], default=None)
    return {
        "settings": vars(args),
        "phases": phases,
        "ratios": ratios,
        "sizes": {
            "before": steady[0] if steady else None,
            "peak": peak,
            "one_retention_after_hold": after_ret[0] if after_ret else None,
            "end": rec.sizes[-1] if rec.sizes else None,
        },
        "series": rec.sizes,
    }


def report(r: dict[str, Any]) -> None:
    print(
        f"held xmin for {r['settings']['hold_s']} s at {r['settings']['rate']} rows/s, "
        f"claim={r['settings']['claim']}, retention {r['settings']['retention_s']} s"
    )
    keys = list(r["phases"]["before"])
    print(f"{'':22}" + "".join(f"{p:>12}" for p in PHASES) + f"{'during/bef':>12}{'after/bef':>12}")
    for k in keys:
        row = "".join(f"{r['phases'][p][k]:12.2f}" for p in PHASES)
        rat = "".join(f"{r['ratios'][p][k]:12.2f}" for p in ("during", "after"))
        print(f"{k:22}{row}{rat}")
    for p in ("during", "after"):
        ok = all(r["ratios"][p][k] <= GOAL for k in ("claim_p50_ms", "claim_p95_ms"))
        tput = r["ratios"][p]["published_per_s"] >= 1 / GOAL
        print(f"goal {p}: claim within {GOAL}x: {ok}; throughput within {GOAL}x: {tput}")
    for label, s in r["sizes"].items():
        if s:
            print(
                f"size {label:26} t={s['t_s']:4}s heap {s['heap_mb']:7.1f} MB  "
                f"indexes {s['index_mb']:6.1f} MB  dead {s['dead']:8}  parts {s['partitions']}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hold-s", type=float, default=300.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--before-s", type=float, default=150.0)
    parser.add_argument("--retention-s", type=float, default=60.0)
    parser.add_argument("--after-s", type=float, default=150.0)
    parser.add_argument("--claim", choices=("cursor", "bottom"), default="cursor")
    parser.add_argument(
        "--partition-ids", type=int, default=0, help="ids per partition (rate * retention / 2)"
    )
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_XMIN_URL", DEFAULT_URL))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = measure(args)
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
