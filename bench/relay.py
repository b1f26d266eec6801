"""Relay benchmark: how fast `outbox relay` drains a backlog, against the client's ceiling.

Usage::

    .venv/bin/python bench/relay.py [--rows 200000] [--naive-rows 20000] [--latency-seconds 15]
                                    [--json]

On PostgreSQL (database ``outbox_bench``, migrated afresh) and the embedded broker (Tansu),
``--rows`` outbox rows are pre-filled: ~300-byte JSON payloads, 1,000 keys, a 6-partition
topic, the headers the write path stores. Then, in the same run:

* ``raw producer``: kafka-python alone sends the very records the relay would send (same
  keys, values, CloudEvents headers, explicitly computed partitions, same producer
  settings), then flushes: the client's ceiling on this machine, with no database at all.
* ``raw, bare``: the same payloads with no headers and the default partitioner (the
  ~13-15k msgs/s figure docs/measured.md quotes).
* ``naive``: claim 100 rows (FOR UPDATE SKIP LOCKED), send each, flush, UPDATE each row,
  commit; as a minutely "outbox:process" command does. Run on ``--naive-rows`` rows.
* ``outbox relay``: the real command (one process), and ``outbox relay --processes 2``
  (one per core; the shard leases split the work), with kafka-python and then with the
  optional confluent-kafka publisher (``KAFKA_CLIENT=confluent``). The relays start
  first, with the rows parked; the clock starts when one statement turns them pending and
  stops when none are.

Then end-to-end latency at a steady 200 commands/s through the real command bus: commit
(`dispatch` returned) -> the record read by a consumer, with one idle relay listening.

Goals (the issue): relay >= 0.8x the raw producer and >= 5x naive; latency p50 <= 10 ms,
p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, select, text, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domain import CommandBus  # noqa: E402
from domain.analytics import RecordInteraction  # noqa: E402
from domain.routing import TOPICS  # noqa: E402
from domain.tenancy import OnboardTenant  # noqa: E402
from outbox import Envelope, OutboxStatus, outbox_rows, outbox_table  # noqa: E402
from outbox.types import utcnow  # noqa: E402
from pipeline.broker import EmbeddedBroker  # noqa: E402
from pipeline.db import make_engine  # noqa: E402
from pipeline.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from pipeline.migrate import upgrade  # noqa: E402
from pipeline.wiring import routed_topics  # noqa: E402
from relay import ensure_topics  # noqa: E402
from relay.kafka import PRODUCER_SETTINGS, partition_for  # noqa: E402
from relay.messages import to_message  # noqa: E402
from relay.store import CLAIM_COLUMNS  # noqa: E402

SHARDS = 16
KEYS = 1_000
PARTITIONS = 6
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench"
RAW_GOAL, NAIVE_GOAL, P50_GOAL_MS, P99_GOAL_MS = 0.8, 5.0, 10.0, 50.0


def prefill(engine: Engine, rows: int, topic: str) -> None:
    now = utcnow()
    filler = "x" * 170
    chunk: list[Envelope] = []
    for i in range(rows):
        key = f"order-{i % KEYS:04d}"
        payload = json.dumps(
            {
                "order_id": key,
                "seq": i // KEYS + 1,
                "amount_cents": 1999 + i % 500,
                "currency": "EUR",
                "note": filler,
            },
            separators=(",", ":"),
        )
        chunk.append(
            Envelope(
                event_id=str(uuid.uuid4()),
                topic=topic,
                key=key,
                type="order.placed",
                payload=payload,
                occurred_at=now,
                headers={
                    "correlation_id": str(uuid.uuid4()),
                    "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
                    "tenant_id": "t-1",
                    "aggregate_type": "order",
                    "aggregate_version": str(i // KEYS + 1),
                    "schema_version": "1",
                },
            )
        )
        if len(chunk) == 5_000 or i == rows - 1:
            with engine.begin() as conn:
                conn.execute(outbox_table.insert(), outbox_rows(chunk, shards=SHARDS, now=now))
            chunk = []


def reset(engine: Engine, topic: str, status: str) -> None:
    """Every row back to `status` on a fresh topic, then VACUUM so runs start alike."""
    with engine.begin() as conn:
        conn.execute(
            update(outbox_table).values(
                status=status,
                topic=topic,
                published_at=None,
                kafka_partition=None,
                kafka_offset=None,
                attempts=0,
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE outbox"))


def _any_pending(engine: Engine) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            select(outbox_table.c.id).where(outbox_table.c.status == OutboxStatus.PENDING).limit(1)
        ).first()
    return found is not None


def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, client_id="bench", **PRODUCER_SETTINGS)


def run_raw(engine: Engine, bootstrap: str, topic: str, *, bare: bool) -> float:
    with engine.connect() as conn:
        rows = conn.execute(select(*CLAIM_COLUMNS).order_by(outbox_table.c.id)).all()
    messages = [to_message(row, b"/outbox-pipeline") for row in rows]
    prod = producer(bootstrap)
    prod.partitions_for(topic)  # metadata first, as the relay has it before it starts
    started = time.perf_counter()
    if bare:
        for m in messages:
            prod.send(topic, value=m.value, key=m.key)
    else:
        for m in messages:
            prod.send(
                topic,
                value=m.value,
                key=m.key,
                headers=m.headers,
                partition=partition_for(m.key, PARTITIONS),
            )
    prod.flush()
    elapsed = time.perf_counter() - started
    prod.close()
    return len(messages) / elapsed


def run_naive(engine: Engine, bootstrap: str, topic: str, limit: int) -> float:
    prod = producer(bootstrap)
    prod.partitions_for(topic)
    o = outbox_table
    done = 0
    started = time.perf_counter()
    while done < limit:
        with engine.begin() as conn:
            rows = conn.execute(
                select(*CLAIM_COLUMNS)
                .where(o.c.status == OutboxStatus.PENDING)
                .order_by(o.c.id)
                .limit(100)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                break
            for row in rows:
                m = to_message(row, b"/outbox-pipeline")
                prod.send(topic, value=m.value, key=m.key, headers=m.headers)
            prod.flush()
            for row in rows:
                conn.execute(
                    update(o)
                    .where(o.c.id == row.id)
                    .values(status=OutboxStatus.PUBLISHED, published_at=utcnow())
                )
        done += len(rows)
    elapsed = time.perf_counter() - started
    prod.close()
    return done / elapsed


def relay_env(url: str, bootstrap: str, client: str = "kafka-python") -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_CLIENT": client,
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OUTBOX_SHARDS": str(SHARDS),
        "LOG_LEVEL": "warning",
    }


def start_relay(
    url: str, bootstrap: str, processes: int, client: str = "kafka-python"
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pipeline.cli", "relay"]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    return subprocess.Popen(cmd, env=relay_env(url, bootstrap, client), cwd=ROOT)


def wait_for_owners(engine: Engine, owners: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT count(DISTINCT owner) FROM relay_leases WHERE owner IS NOT NULL")
            ).scalar_one()
        if found == owners:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{owners} relay instance(s) did not take their leases")


def stop_relay(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def run_relay(
    engine: Engine, url: str, bootstrap: str, processes: int, *, rows: int, client: str
) -> float:
    proc = start_relay(url, bootstrap, processes, client)
    try:
        wait_for_owners(engine, processes)
        time.sleep(1.0)  # shares settled
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(update(outbox_table).values(status=OutboxStatus.PENDING))
            conn.execute(text("SELECT pg_notify('outbox_pending', '')"))
        # A cheap probe (one index lookup): counting 200,000 rows 20 times a second would
        # steal a core from the relays being measured.
        while _any_pending(engine):
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        stop_relay(proc)
    return rows / elapsed


def run_latency(engine: Engine, url: str, bootstrap: str, seconds: float) -> list[float]:
    """Milliseconds from commit to consumer, at 200 commands/s, after a 1 s warm-up."""
    bus = CommandBus(engine, shards=SHARDS)
    bus.dispatch(OnboardTenant(tenant_id="t-lat", name="Latency", contact_email="ops@example.com"))
    topic = TOPICS["interaction"].name
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    parts = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in parts])
    consumer.seek_to_end()
    consumer.poll(timeout_ms=100)
    committed: dict[str, float] = {}
    received: dict[str, float] = {}
    proc = start_relay(url, bootstrap, 1)
    stop = threading.Event()

    def writer() -> None:
        interval, n = 1 / 200, 0
        next_at = time.perf_counter()
        while not stop.is_set():
            result = bus.dispatch(
                RecordInteraction(tenant_id="t-lat", visitor_id=f"v-{n % 50}", kind="page_view")
            )
            committed[result.events[0].event_id] = time.perf_counter()
            n += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))

    try:
        wait_for_owners(engine, 1)
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end + 1:
            if time.perf_counter() >= end:
                stop.set()
            for records in consumer.poll(timeout_ms=5).values():
                now = time.perf_counter()
                for r in records:
                    event_id = dict(r.headers)["ce_id"].decode()
                    received[event_id] = now
        thread.join()
    finally:
        stop_relay(proc)
        consumer.close()
    first = min(committed.values())
    return sorted(
        (received[e] - t) * 1000 for e, t in committed.items() if e in received and t > first + 1.0
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    create_database_if_missing(args.url)
    engine = make_engine(args.url)
    drop_all_tables(engine)
    upgrade(engine)
    results: dict[str, Any] = {"rows": args.rows}
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, routed_topics())

        def fresh(status: str) -> str:
            """All rows back to `status`, on a new topic (the broker keeps the old ones)."""
            name = f"bench-{uuid.uuid4().hex[:8]}"
            ensure_topics(bootstrap, {name: PARTITIONS})
            reset(engine, name, status)
            return name

        say(f"pre-filling {args.rows:,} outbox rows ...")
        prefill(engine, args.rows, "unset")
        for name, bare in (("raw_producer", False), ("raw_bare", True)):
            results[name] = run_raw(engine, bootstrap, fresh(OutboxStatus.PENDING), bare=bare)
            say(f"{name}: {results[name]:,.0f} msgs/s")
        topic = fresh(OutboxStatus.PENDING)
        results["naive"] = run_naive(engine, bootstrap, topic, args.naive_rows)
        say(f"naive: {results['naive']:,.0f} rows/s")
        for client, suffix in (("kafka-python", ""), ("confluent", "_confluent")):
            for processes in (1, 2):
                fresh(OutboxStatus.PARKED)
                key = f"relay_{processes}p{suffix}"
                results[key] = run_relay(
                    engine, args.url, bootstrap, processes, rows=args.rows, client=client
                )
                say(f"outbox relay x{processes} ({client}): {results[key]:,.0f} rows/s")
        with engine.begin() as conn:
            conn.execute(outbox_table.delete())
        latencies = run_latency(engine, args.url, bootstrap, args.latency_seconds)
    results["latency_samples"] = len(latencies)
    results["latency_p50_ms"] = statistics.median(latencies) if latencies else None
    results["latency_p99_ms"] = latencies[int(len(latencies) * 0.99) - 1] if latencies else None
    for p in (1, 2):
        for suffix in ("", "_confluent"):
            rate = results[f"relay_{p}p{suffix}"]
            results[f"ratio_relay_{p}p{suffix}_vs_raw"] = rate / results["raw_producer"]
            results[f"ratio_relay_{p}p{suffix}_vs_naive"] = rate / results["naive"]
    return results


def report(results: dict[str, Any]) -> None:
    raw = results["raw_producer"]
    table = Table("measure", "figure", "ratio / goal")
    table.add_row("raw producer (same records)", f"{raw:,.0f}/s", "baseline")
    table.add_row("raw producer (bare)", f"{results['raw_bare']:,.0f}/s", "")
    table.add_row("naive relay", f"{results['naive']:,.0f}/s", "")
    for suffix, client in (("", "kafka-python"), ("_confluent", "confluent-kafka")):
        for p in (1, 2):
            vs_raw = results[f"ratio_relay_{p}p{suffix}_vs_raw"]
            vs_naive = results[f"ratio_relay_{p}p{suffix}_vs_naive"]
            table.add_row(
                f"outbox relay x{p} ({client})",
                f"{results[f'relay_{p}p{suffix}']:,.0f}/s",
                f"{vs_raw:.2f}x raw (goal >= {RAW_GOAL}), "
                f"{vs_naive:.1f}x naive (goal >= {NAIVE_GOAL})",
            )
    if results["latency_samples"]:
        table.add_row(
            "latency commit -> consumer",
            f"p50 {results['latency_p50_ms']:.1f} ms, p99 {results['latency_p99_ms']:.1f} ms",
            f"goal p50 <= {P50_GOAL_MS}, p99 <= {P99_GOAL_MS} "
            f"({results['latency_samples']} samples)",
        )
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--naive-rows", type=int, default=20_000)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_POSTGRES_URL", DEFAULT_URL))
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
