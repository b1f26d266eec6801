"""A worker that is not doing its job notices, says so, leaves its group and exits to be
replaced: never assigned, or behind without progress."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine
from structlog.testing import capture_logs

from consumers import (
    BoundGroup,
    Dispatcher,
    Group,
    GroupState,
    JobContext,
    JobRegistry,
    MemoryBroker,
    MemorySource,
    Worker,
    WorkerConfig,
    job,
)
from consumers.liveness import Liveness
from domain import CommandBus
from pipeline.db import make_engine
from pipeline.migrate import upgrade
from tests.consumer_harness import EVENTS, SHARDS, Pinged, ping, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'live.db'}")
    upgrade(engine)
    return engine


def _worker(engine: Engine, source: MemorySource, group: Group, registry: JobRegistry) -> Worker:
    return Worker(
        engine,
        BoundGroup(group, registry),
        WorkerConfig(
            bootstrap_servers="memory",
            shards=SHARDS,
            poll_timeout_ms=20,
            liveness_timeout_s=0.5,
            liveness_check_s=0.1,
        ),
        bus=CommandBus(engine, shards=SHARDS),
        dispatcher=Dispatcher([group], registry, shards=SHARDS),
        events=EVENTS,
        source=lambda: source,
    )


def _run(worker: Worker, timeout_s: float = 20) -> None:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        worker.stop()
        thread.join(10)
        pytest.fail("the worker did not notice it was stalled")


def test_a_worker_whose_source_never_assigns_leaves_and_exits_to_be_replaced(
    sqlite_engine: Engine,
) -> None:
    broker = MemoryBroker({"topic": 3})
    registry = JobRegistry()

    @job("noop", on=Pinged, registry=registry)
    def noop(event: Pinged, ctx: JobContext) -> None: ...

    group = Group(f"l-{uuid.uuid4().hex[:8]}", topics=("topic",), jobs=("noop",))
    for topic, n in group.internal_topics().items():
        broker.create_topic(topic, n)
    source = MemorySource(broker, group.name, hold_assignment=True)
    worker = _worker(sqlite_engine, source, group, registry)
    with capture_logs() as logs:
        _run(worker)
    assert worker.stats.exit_reason == "stalled"
    stalled = [e for e in logs if e["event"] == "consumer_stalled"]
    assert stalled and stalled[0]["reason"] == "unassigned"
    assert "1 member(s)" in stalled[0]["detail"]
    assert source.closed and broker.members(group.name) == 0  # it left the group
    sample = worker.metrics.registry.get_sample_value
    assert sample("outbox_consumer_stalled_total", {"group": group.name, "reason": "unassigned"})


def test_a_worker_behind_whose_batches_never_commit_is_found_stalled(
    tmp_path: Path,
) -> None:
    """Another process holds the database's write lock: every batch rolls back after its
    busy timeout, the lag stays, nothing progresses."""
    path = tmp_path / "locked.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    broker = MemoryBroker({"topic": 1})
    registry = JobRegistry()

    @job("writes", on=Pinged, registry=registry)
    def writes(event: Pinged, ctx: JobContext) -> None: ...

    group = Group(f"l-{uuid.uuid4().hex[:8]}", topics=("topic",), jobs=("writes",))
    for topic, n in group.internal_topics().items():
        broker.create_topic(topic, n)
    worker = _worker(engine, MemorySource(broker, group.name), group, registry)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        with capture_logs() as logs:
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            wait_for(lambda: broker.members(group.name) == 1, what="the worker joined")
            holder.execute("BEGIN EXCLUSIVE")
            env = ping("topic", 1)
            broker.produce(
                "topic",
                key=b"k",
                value=env.payload.encode(),
                headers=[("ce_id", env.event_id.encode()), ("ce_type", env.type.encode())],
            )
            thread.join(60)
            assert not thread.is_alive(), "the worker did not notice it was stalled"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert worker.stats.exit_reason == "stalled"
    reasons = [e["reason"] for e in logs if e["event"] == "consumer_stalled"]
    assert reasons == ["no_progress"]
    assert any(e["event"] == "consumer_batch_rolled_back" for e in logs)


def test_a_spare_member_of_a_group_with_more_members_than_partitions_stays() -> None:
    now = [0.0]
    live = Liveness("g", 10, loop_grace_s=5, clock=lambda: now[0])
    live.assignment(0)
    now[0] = 11
    spare = GroupState("Stable", members=4, partitions=3)
    assert live.check(0, lambda: spare) is None
    wedged = GroupState("PreparingRebalance", members=3, partitions=3)
    now[0] = 22
    verdict = live.check(0, lambda: wedged)
    assert verdict is not None and verdict.reason == "unassigned"
    live.assignment(3)
    now[0] = 30
    assert live.check(5, lambda: None) is None  # assigned 8 s ago, behind: not yet
    now[0] = 34
    behind = live.check(5, lambda: None)
    assert behind is not None and behind.reason == "no_progress"
    live.progressed()
    assert live.check(5, lambda: None) is None
