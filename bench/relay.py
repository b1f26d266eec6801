"""Relay benchmark: how fast `outbox relay` drains a backlog, against the client's ceiling.

Usage::

    .venv/bin/python bench/relay.py [--rows 200000] [--naive-rows 20000] [--latency-seconds 15]
                                    [--bootstrap host:port] [--json]

On PostgreSQL (database ``outbox_bench``, migrated afresh) and the embedded broker (Tansu),
or the broker ``--bootstrap`` names (else ``OUTBOX_BENCH_KAFKA_BOOTSTRAP``, else
``OUTBOX_TEST_KAFKA_BOOTSTRAP`` as for the tests and the other benches; Apache Kafka, say:
the bench creates its own topics there and leaves them),
``--rows`` outbox rows are pre-filled: ~300-byte JSON payloads, 1,000 keys, a 6-partition
topic, the headers the write path stores. Then, in the same run:

* ``raw producer``: kafka-python alone sends the very records the relay would send (same
  keys, values, CloudEvents headers, explicitly computed partitions, same producer
  settings), then flushes: the client's ceiling on this machine, with no database at all.
* ``raw producer (confluent)``: the same with confluent-kafka (librdkafka, the relay's
  settings): the ceiling the relay's ``KAFKA_CLIENT=confluent`` runs are compared with.
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

Goals (issue 26): relay >= 0.8x the raw producer of the same client in one process,
>= 1.2x in two; >= 5x naive; latency p50 <= 10 ms, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
# ROOT ahead of bench/: `relay` is the package, not this script.
sys.path.insert(0, str(ROOT))

from relay_runs import (  # noqa: E402
    PARTITIONS,
    prefill,
    reset,
    run_latency,
    run_naive,
    run_raw,
    run_raw_confluent,
    run_relay,
)

from infra.broker import EmbeddedBroker  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from outbox import OutboxStatus, outbox_table  # noqa: E402
from pipeline.wiring import routed_topics  # noqa: E402
from relay import ensure_topics  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench"
RAW_GOAL, RAW2_GOAL, NAIVE_GOAL, P50_GOAL_MS, P99_GOAL_MS = 0.8, 1.2, 5.0, 10.0, 50.0


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The external broker's bootstrap servers, or an embedded broker's."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


def measure(args: argparse.Namespace) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    create_database_if_missing(args.url)
    engine = make_engine(args.url)
    drop_all_tables(engine)
    upgrade(engine)
    results: dict[str, Any] = {"rows": args.rows, "broker": args.bootstrap or "embedded"}
    with broker(args.bootstrap) as bootstrap:
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
        results["raw_confluent"] = run_raw_confluent(engine, bootstrap, fresh(OutboxStatus.PENDING))
        say(f"raw_confluent: {results['raw_confluent']:,.0f} msgs/s")
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
        for suffix, raw in (("", "raw_producer"), ("_confluent", "raw_confluent")):
            rate = results[f"relay_{p}p{suffix}"]
            # Each client against its own raw producer (the goal), kafka-python's too.
            results[f"ratio_relay_{p}p{suffix}_vs_raw"] = rate / results[raw]
            kafka_python = results["raw_producer"]
            results[f"ratio_relay_{p}p{suffix}_vs_raw_kafka_python"] = rate / kafka_python
            results[f"ratio_relay_{p}p{suffix}_vs_naive"] = rate / results["naive"]
    return results


def report(results: dict[str, Any]) -> None:
    raw = results["raw_producer"]
    table = Table("measure", "figure", "ratio / goal")
    table.add_row("raw producer (same records)", f"{raw:,.0f}/s", "kafka-python's baseline")
    table.add_row(
        "raw producer (confluent-kafka)", f"{results['raw_confluent']:,.0f}/s", "its baseline"
    )
    table.add_row("raw producer (bare)", f"{results['raw_bare']:,.0f}/s", "")
    table.add_row("naive relay", f"{results['naive']:,.0f}/s", "")
    for suffix, client in (("", "kafka-python"), ("_confluent", "confluent-kafka")):
        for p in (1, 2):
            vs_raw = results[f"ratio_relay_{p}p{suffix}_vs_raw"]
            vs_naive = results[f"ratio_relay_{p}p{suffix}_vs_naive"]
            table.add_row(
                f"outbox relay x{p} ({client})",
                f"{results[f'relay_{p}p{suffix}']:,.0f}/s",
                f"{vs_raw:.2f}x its raw producer (goal >= {RAW_GOAL} x1, {RAW2_GOAL} x2), "
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
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("OUTBOX_BENCH_KAFKA_BOOTSTRAP")
        or os.environ.get("OUTBOX_TEST_KAFKA_BOOTSTRAP"),
        help="an external broker (host:port; default OUTBOX_BENCH_KAFKA_BOOTSTRAP, else "
        "OUTBOX_TEST_KAFKA_BOOTSTRAP) instead of the embedded one",
    )
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
