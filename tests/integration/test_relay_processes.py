"""Several `outbox relay` processes on PostgreSQL with the embedded broker: shared work,
per-aggregate order, and a relay killed with SIGKILL in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from infra.broker import EmbeddedBroker, free_port
from outbox import OutboxStatus, outbox_table, relay_instances_table, relay_leases_table
from tests.kafka_helpers import (
    assert_in_version_order,
    consume,
    envelopes,
    fresh_topic,
    insert,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHARDS = 16


def start_relays(
    engine: Engine, bootstrap: str, logs: Path, count: int, *, ttl_s: float, batch: int
) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OUTBOX_SHARDS": str(SHARDS),
        "RELAY_LEASE_TTL_S": str(ttl_s),
        "RELAY_BATCH_SIZE": str(batch),
    }
    procs = []
    for i in range(count):
        log = (logs / f"relay-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "relay"], env=env, stdout=log, stderr=log
            )
        )
    return procs


def owners(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(
            owner
            for owner in conn.execute(select(relay_leases_table.c.owner)).scalars()
            if owner is not None
        )


def published(engine: Engine, topic: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    outbox_table.c.topic == topic, outbox_table.c.status == OutboxStatus.PUBLISHED
                )
            ).scalar_one()
        )


def stop(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(None)
    return codes


def test_three_relays_publish_20000_events_in_order_per_aggregate(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = fresh_topic(kafka.bootstrap_servers, partitions=6)
    procs = start_relays(postgres_db, kafka.bootstrap_servers, tmp_path, 3, ttl_s=5, batch=500)
    try:
        # The shares settle first, so that the work really is split three ways.
        wait_for(lambda: len(owners(postgres_db)) == 3, 60, "three relays holding leases")
        envs = envelopes(topic, keys=200, per_key=100)
        insert(postgres_db, envs, shards=SHARDS)
        wait_for(lambda: published(postgres_db, topic) == len(envs), 180, "all published")
    finally:
        codes = stop(procs)
    assert codes == [0, 0, 0]  # SIGTERM: batch finished, leases released, exit 0
    assert owners(postgres_db) == Counter()
    for i in range(3):
        assert b"relay_batch_published" in (tmp_path / f"relay-{i}.log").read_bytes()

    records = consume(kafka.bootstrap_servers, topic, len(envs), timeout_s=120)
    assert {r.headers["ce_id"] for r in records} == {e.event_id for e in envs}
    assert len(records) == len(envs)  # no crash, no lost lease: no duplicates either
    assert_in_version_order(records)


def test_a_relay_killed_mid_run_loses_nothing_and_duplicates_at_most_two_batches(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = fresh_topic(kafka.bootstrap_servers, partitions=6)
    ttl, batch = 2.0, 200
    procs = start_relays(postgres_db, kafka.bootstrap_servers, tmp_path, 3, ttl_s=ttl, batch=batch)
    try:
        wait_for(lambda: len(owners(postgres_db)) == 3, 60, "three relays holding leases")
        envs = envelopes(topic, keys=200, per_key=50)
        insert(postgres_db, envs, shards=SHARDS)
        wait_for(lambda: published(postgres_db, topic) >= 1000, 60, "publishing under way")

        victim = procs[0]
        victim_id = next(o for o in owners(postgres_db) if f"-{victim.pid}-" in o)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        wait_for(lambda: victim_id not in owners(postgres_db), 10 * ttl, "shards taken over")
        takeover_s = time.monotonic() - killed_at
        wait_for(lambda: published(postgres_db, topic) == len(envs), 120, "all published")
    finally:
        codes = stop(procs[1:])
    assert codes == [0, 0]
    # Taken over once the lease expired, and before a heartbeat interval more had passed.
    assert takeover_s < ttl + ttl / 3 + 2

    records = consume(kafka.bootstrap_servers, topic, len(envs), timeout_s=120)
    ids = Counter(r.headers["ce_id"] for r in records)
    assert set(ids) == {e.event_id for e in envs}  # nothing lost
    duplicates = sum(n - 1 for n in ids.values())
    # At most the killed relay's two batches: the one at the broker and the one acked
    # whose marks its database thread was writing (the pipeline, ADR 003 decision 8).
    assert duplicates <= 2 * batch
    assert_in_version_order(records)


def test_processes_supervisor_replaces_a_dead_relay_and_stops_cleanly(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": postgres_db.url.render_as_string(hide_password=False),
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "OUTBOX_SHARDS": str(SHARDS),
        "RELAY_LEASE_TTL_S": "2",
    }
    log = (tmp_path / "supervisor.log").open("wb")
    port = free_port()
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "relay",
            "--processes",
            "2",
            "--metrics-port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        wait_for(lambda: len(owners(postgres_db)) == 2, 60, "two relay processes")
        held = [_metric(port + i, "outbox_relay_leases_held") for i in range(2)]
        assert sum(held) == SHARDS  # each child serves its own metrics port
        pids = live_pids(postgres_db)
        victim = min(pids)
        victim_id = next(o for o in owners(postgres_db) if f"-{victim}-" in o)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(live_pids(postgres_db) - pids) == 1, 60, "a replacement relay")
        wait_for(
            lambda: victim_id not in owners(postgres_db) and len(owners(postgres_db)) == 2,
            60,
            "the replacement holding the dead relay's share",
        )
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=60)
    assert code == 0
    assert owners(postgres_db) == Counter()
    log = (tmp_path / "supervisor.log").read_bytes()
    assert b"exited with -9 after" in log
    assert b"starting another in 0.5 s" in log


def _metric(port: int, name: str) -> float:
    """A sample from a relay's Prometheus endpoint (retried while the child starts)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                body = resp.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not served on port {port}")


def live_pids(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(relay_instances_table.c.pid)).scalars())
