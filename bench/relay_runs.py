"""The runs bench/relay.py times, and what they need: the backlog, the relay processes.

- the backlog: `prefill` writes the outbox rows (~300-byte JSON, 1,000 keys, the headers
  the write path stores); `reset` puts every row back to one status on a fresh topic;
- the runs, each returning a rate: `run_raw` (kafka-python alone, no database),
  `run_raw_confluent` (confluent-kafka alone), `run_naive`
  (claim 100, send, flush, update each, commit) and `run_relay` (the real ``outbox relay``
  in 1 or more processes, timed from one statement turning the parked rows pending until
  none are); `run_latency` returns commit -> consumer latencies at 200 commands/s;
- the relay as a process: `start_relay`, `wait_for_owners` (its shard leases taken),
  `stop_relay`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer as ConfluentProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import Engine, select, text, update

from domain import CommandBus
from domain.analytics import RecordInteraction
from domain.routing import TOPICS
from domain.tenancy import OnboardTenant
from outbox import Envelope, OutboxStatus, outbox_rows, outbox_table
from outbox.types import utcnow
from relay.confluent import PRODUCER_CONFIG as CONFLUENT_CONFIG
from relay.kafka import PRODUCER_SETTINGS, partition_for
from relay.messages import to_message
from relay.store import CLAIM_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 16
KEYS = 1_000
PARTITIONS = 6


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


def run_raw_confluent(engine: Engine, bootstrap: str, topic: str) -> float:
    """`run_raw` with confluent-kafka and the relay's librdkafka settings."""
    with engine.connect() as conn:
        rows = conn.execute(select(*CLAIM_COLUMNS).order_by(outbox_table.c.id)).all()
    messages = [to_message(row, b"/outbox-pipeline") for row in rows]
    prod = ConfluentProducer({"bootstrap.servers": bootstrap, **CONFLUENT_CONFIG})
    prod.list_topics(topic, timeout=10)  # metadata first, as the relay has it
    started = time.perf_counter()
    for m in messages:
        while True:
            try:
                prod.produce(
                    topic,
                    value=m.value,
                    key=m.key,
                    headers=m.headers,
                    partition=partition_for(m.key, PARTITIONS),
                )
                break
            except BufferError:  # the local queue is full: let it drain
                prod.poll(0.05)
    left = prod.flush(60)
    elapsed = time.perf_counter() - started
    if left:
        raise RuntimeError(f"{left} records not delivered within 60 s")
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
