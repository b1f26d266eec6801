"""Consumer benchmark: events/s through `outbox consume` against the raw kafka-python consumer.

Usage::

    .venv/bin/python bench/consume.py [--messages 100000] [--runs 1] [--bootstrap HOST:PORT]
                                      [--json]

On PostgreSQL (database ``outbox_bench``, migrated afresh) and the embedded broker (Tansu;
``--bootstrap`` or OUTBOX_TEST_KAFKA_BOOTSTRAP for another, e.g. Apache Kafka),
``--messages`` records of ~300 bytes (CloudEvents headers as the relay sends them, 1,000
keys, 6 partitions) are produced to a fresh topic. Then, in the same run, each reads the
whole topic from the start in its own consumer group (the clock starts at the first record,
so the group join is not counted):

* ``raw``: kafka-python's KafkaConsumer.poll() alone, the client's ceiling.
* ``raw + json``: the same, decoding each value with json.loads (docs/measured.md's ~24k/s).
* ``raw confluent``: confluent-kafka's Consumer.consume() alone (when installed), and
  ``outbox consume (confluent)``: the worker with ``KAFKA_CLIENT=confluent`` (ADR 019),
  compared with it.
* ``outbox consume``: the real worker (one process) running a trivial job: per batch, one
  transaction with the inbox check, each message decoded into its event class, the handler
  called under its time limit, one inbox row per message inserted, commit, then the Kafka
  offsets committed; one JSON log line per message (written to /dev/null).

Goal: ``outbox consume`` >= 0.4x the raw consumer as the median of 3 runs,
aiming at 0.5x.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumers import Group, JobContext, JobRegistry, job  # noqa: E402
from consumers.dispatch import Dispatcher  # noqa: E402
from consumers.groups import BoundGroup  # noqa: E402
from consumers.runtime import Worker, WorkerConfig  # noqa: E402
from domain import CommandBus  # noqa: E402
from domain.events import DomainEvent, EventRegistry  # noqa: E402
from infra.broker import EmbeddedBroker  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.logs import configure_logging  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from pipeline.job_log import batch_job_log  # noqa: E402
from relay import ensure_topics  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench"
EVENTS = EventRegistry()


@EVENTS.register
class ProductViewed(DomainEvent):
    TYPE = "bench.product_viewed"
    tenant_id: str
    visitor_id: str
    product_id: str
    note: str


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, batch_size=262144, acks="all"
    )
    note = "x" * 180
    for n in range(count):
        body = {
            "tenant_id": "t-1",
            "visitor_id": f"v-{n % 5000}",
            "product_id": f"p-{n % 1000}",
            "note": note,
        }
        producer.send(
            topic,
            key=f"agg-{n % 1000}".encode(),
            value=json.dumps(body).encode(),
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", str(uuid.uuid4()).encode()),
                ("ce_type", ProductViewed.TYPE.encode()),
                ("ce_source", b"/outbox-pipeline"),
                ("ce_time", b"2026-11-22T10:00:00.000000Z"),
                ("content-type", b"application/json"),
                ("outbox_id", str(n).encode()),
                ("correlation_id", str(uuid.uuid4()).encode()),
                ("tenant_id", b"t-1"),
                ("schema_version", b"1"),
            ],
        )
    producer.flush()
    producer.close()


def raw(bootstrap: str, topic: str, count: int, *, decode: bool) -> float:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        max_poll_interval_ms=6000,
        max_poll_records=500,
    )
    seen, started = 0, 0.0
    while seen < count:
        for records in consumer.poll(timeout_ms=500).values():
            if not started:
                started = time.perf_counter()
            if decode:
                for record in records:
                    json.loads(record.value)
            seen += len(records)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def raw_confluent(bootstrap: str, topic: str, count: int) -> float:
    """librdkafka's bare consume(), batches of 500, no commit: its client's ceiling."""
    from confluent_kafka import Consumer  # optional: pip install '.[fast]'

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    consumer.subscribe([topic])
    seen, started = 0, 0.0
    while seen < count:
        messages = [m for m in consumer.consume(500, 0.5) if m.error() is None]
        if messages and not started:
            started = time.perf_counter()
        seen += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def ours(
    engine: Any,
    bootstrap: str,
    topic: str,
    count: int,
    batch: int = 500,
    *,
    kafka_client: str = "kafka-python",
) -> float:
    registry = JobRegistry()

    @job("bench-noop", on=ProductViewed, registry=registry)
    def noop(event: ProductViewed, ctx: JobContext) -> None:
        """Trivial: the runtime's own cost is what is measured."""

    group = Group(f"bench-{uuid.uuid4().hex[:8]}", topics=(topic,), jobs=("bench-noop",))
    ensure_topics(bootstrap, group.internal_topics())
    worker = Worker(
        engine,
        BoundGroup(group, registry),
        WorkerConfig(
            bootstrap_servers=bootstrap,
            shards=16,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=60_000,
            max_poll_records=batch,
            kafka_client=kafka_client,
        ),
        bus=CommandBus(engine, shards=16),
        dispatcher=Dispatcher([group], registry, shards=16),
        events=EVENTS,
        # As `outbox consume` writes its lines: a batch at a time (pipeline.job_log).
        job_log=batch_job_log("info", "json"),
    )
    first = threading.Event()
    started = [0.0]
    original = worker._handle

    def timed(*args: Any) -> None:
        if not first.is_set():
            started[0] = time.perf_counter()
            first.set()
        original(*args)

    worker._handle = timed  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while worker.stats.processed < count:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started[0]
    worker.stop()
    thread.join()
    return count / elapsed


def measure(
    engine: Any, bootstrap: str, topic: str, args: argparse.Namespace, devnull: Any
) -> list[dict[str, float]]:
    """Each run: the bare clients' polls, then `outbox consume` with each client."""
    confluent = importlib.util.find_spec("confluent_kafka") is not None
    results: list[dict[str, float]] = []
    for run in range(args.runs):
        Console(stderr=True).print(f"run {run + 1}: raw, raw + json, outbox consume ...")
        figures = {
            "raw": raw(bootstrap, topic, args.messages, decode=False),
            "raw_json": raw(bootstrap, topic, args.messages, decode=True),
        }
        stderr, sys.stderr = sys.stderr, devnull
        try:
            figures["outbox_consume"] = ours(engine, bootstrap, topic, args.messages, args.batch)
            if confluent:
                figures["raw_confluent"] = raw_confluent(bootstrap, topic, args.messages)
                figures["outbox_consume_confluent"] = ours(
                    engine, bootstrap, topic, args.messages, args.batch, kafka_client="confluent"
                )
        finally:
            sys.stderr = stderr
        results.append(figures)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_URL", DEFAULT_URL))
    parser.add_argument("--batch", type=int, default=500, help="max_poll_records")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("OUTBOX_TEST_KAFKA_BOOTSTRAP"),
        help="an external broker (default: OUTBOX_TEST_KAFKA_BOOTSTRAP, else the embedded one)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=True)
    create_database_if_missing(args.url)
    engine = make_engine(args.url)
    drop_all_tables(engine)
    upgrade(engine)
    # One JSON line per handled message, as in production, written to /dev/null.
    configure_logging("info", "json")
    with ExitStack() as stack:
        if args.bootstrap:
            bootstrap, broker_name = args.bootstrap, f"external broker {args.bootstrap}"
        else:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap_servers
            broker_name = "Tansu"
        devnull = stack.enter_context(open(os.devnull, "w"))
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, {topic: 6})
        console.print(f"producing {args.messages} records to {topic} ...")
        produce(bootstrap, topic, args.messages)
        results = measure(engine, bootstrap, topic, args, devnull)
    if args.json:
        print(json.dumps(results))
        return
    table = Table(title=f"consumer: {args.messages} messages, PostgreSQL + {broker_name}")
    for name in ("run", "measure", "msgs/s", "x raw", "x raw + json"):
        table.add_column(name)
    for n, figures in enumerate(results, 1):
        for name, label in (
            ("raw", "raw kafka-python poll()"),
            ("raw_json", "raw + json.loads"),
            ("outbox_consume", "outbox consume (trivial job)"),
        ):
            table.add_row(
                str(n),
                label,
                f"{figures[name]:,.0f}",
                f"{figures[name] / figures['raw']:.2f}",
                f"{figures[name] / figures['raw_json']:.2f}",
            )
        for name, label in (
            ("raw_confluent", "raw confluent consume()"),
            ("outbox_consume_confluent", "outbox consume (confluent)"),
        ):
            if name in figures:
                ratio = figures[name] / figures["raw_confluent"]
                table.add_row(
                    str(n), label, f"{figures[name]:,.0f}", f"{ratio:.2f} (confluent)", ""
                )
    Console().print(table)
    ratios = sorted(f["outbox_consume"] / f["raw"] for f in results)
    Console().print(
        f"median of {len(ratios)} run(s): outbox consume = {ratios[len(ratios) // 2]:.2f}x raw "
        "(goal >= 0.4x, aiming at 0.5x)"
    )
    if "raw_confluent" in results[0]:
        fast = sorted(f["outbox_consume_confluent"] / f["raw_confluent"] for f in results)
        Console().print(
            f"median: outbox consume (confluent) = {fast[len(fast) // 2]:.2f}x raw confluent"
        )


if __name__ == "__main__":
    main()
