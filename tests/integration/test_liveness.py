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

from consumers import Group, JobContext, JobRegistry, job
from consumers._internal.liveness import Liveness
from consumers.dispatch import Dispatcher
from consumers.groups import BoundGroup
from consumers.memory import MemoryBroker, MemorySource
from consumers.runtime import Worker, WorkerConfig
from consumers.source import GroupState
from domain import CommandBus
from infra.db import make_engine
from infra.migrate import upgrade
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


def _produce_ping(broker: MemoryBroker, n: int, key: bytes = b"k") -> None:
    env = ping("topic", n)
    broker.produce(
        "topic",
        key=key,
        value=env.payload.encode(),
        headers=[("ce_id", env.event_id.encode()), ("ce_type", env.type.encode())],
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
            _produce_ping(broker, 1)
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


def test_a_worker_alone_in_a_wedged_group_reforms_it_and_the_next_starts_where_it_was(
    sqlite_engine: Engine,
) -> None:
    broker = MemoryBroker({"topic": 3})
    registry = JobRegistry()
    handled: list[int] = []

    @job("noted", on=Pinged, registry=registry)
    def noted(event: Pinged, ctx: JobContext) -> None:
        handled.append(event.n)

    group = Group(f"l-{uuid.uuid4().hex[:8]}", topics=("topic",), jobs=("noted",))
    for topic, n in group.internal_topics().items():
        broker.create_topic(topic, n)
    for n in range(6):
        _produce_ping(broker, n, key=f"k-{n}".encode())
    done = {
        (t, p): (len([r for r in broker.records(t) if r.partition == p]), "")
        for t, p in [("topic", 0), ("topic", 1), ("topic", 2)]
    }
    assert broker.commit_standalone(group.name, done)  # everything so far was handled
    broker.wedge(group.name)
    stalled = _worker(sqlite_engine, MemorySource(broker, group.name), group, registry)
    with capture_logs() as logs:
        _run(stalled)
    assert stalled.stats.exit_reason == "stalled"
    [reform] = [e for e in logs if e["event"] == "consumer_group_reform"]
    assert reform["outcome"] == "group re-formed with 3 committed offset(s)"
    assert broker.committed(group.name) == done  # the offsets outlived the group

    _produce_ping(broker, 6, key=b"k-6")
    fresh = _worker(sqlite_engine, MemorySource(broker, group.name), group, registry)
    thread = threading.Thread(target=fresh.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: handled == [6], what="the record after the committed offsets")
    finally:
        fresh.stop()
        thread.join(10)
    assert fresh.stats.processed == 1 and fresh.stats.duplicates == 0


def test_a_worker_not_alone_in_a_wedged_group_leaves_it_to_the_others() -> None:
    broker = MemoryBroker({"topic": 3})
    group = "g-wedged"
    other = MemorySource(broker, group)
    other.subscribe(["topic"], _NoListener())
    broker.wedge(group)
    mine = MemorySource(broker, group)
    mine.subscribe(["topic"], _NoListener())
    mine.close()
    assert mine.reform_group().startswith("not re-formed: member(s) still in the group")
    # Stuck with it: the broker is asked, and refuses a group with members, as Kafka does.
    refused = mine.reform_group(stuck_members=True)
    assert refused == "not re-formed: the broker did not delete the group"
    assert broker.members(group) == 1 and broker.delete_group(group) is False

    now = [0.0]
    live = Liveness("g", 10, loop_grace_s=5, clock=lambda: now[0])
    live.assignment(0)
    now[0] = 11
    two = live.check(0, lambda: GroupState("Unknown", members=2, partitions=9))
    assert two is not None and two.reason == "unassigned" and two.reform == "stuck"
    stable = live.check(0, lambda: GroupState("Stable", members=2, partitions=9))
    assert stable is not None and stable.reform is None  # the other member holds them
    unknown = live.check(0, lambda: None)
    assert unknown is not None and unknown.reform is None  # the broker could not be asked
    one = live.check(0, lambda: GroupState("Stable", members=1, partitions=9))
    assert one is not None and one.reform == "alone"


class _NoListener:
    def revoked(self, partitions: set[tuple[str, int]]) -> None: ...

    def assigned(self, partitions: set[tuple[str, int]]) -> None: ...


def test_a_worker_rejoining_for_too_long_with_its_old_partitions_is_found_stalled() -> None:
    """It still holds its last generation's partitions (no lag on them), so it looks
    neither unassigned nor behind; alone in the group that is a wedge after the timeout,
    with others only after the timeout plus the wait a busy member may legitimately cause."""
    now = [0.0]
    live = Liveness("g", 10, loop_grace_s=30, clock=lambda: now[0])
    live.assignment(3)
    live.rebalancing(True)
    now[0] = 5
    live.rebalancing(True)
    assert live.check(0, lambda: GroupState("Unknown", members=1, partitions=9)) is None
    now[0] = 11
    alone = live.check(0, lambda: GroupState("Unknown", members=1, partitions=9))
    assert alone is not None and alone.reason == "rebalancing" and alone.reform == "alone"
    assert "joining the group for 11 s" in alone.detail

    with_others = GroupState("PreparingRebalance", members=3, partitions=9)
    assert live.check(0, lambda: with_others) is None  # a member may be finishing a batch
    now[0] = 41
    late = live.check(0, lambda: with_others)
    assert late is not None and late.reason == "rebalancing" and late.reform == "stuck"

    live.rebalancing(False)  # the join completed: the count starts afresh
    now[0] = 100
    live.progressed()
    assert live.check(0, lambda: with_others) is None
    live.rebalancing(True)
    now[0] = 105
    assert live.check(0, lambda: with_others) is None
