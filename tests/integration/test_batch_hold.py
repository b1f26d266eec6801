"""The runtime's side of holding a long batch's partitions (consumers._internal.keepalive,
ADR 019 decision 6), on the in-memory source and SQLite: a partition revoked while its
batch runs gets the commit of what was durable before the batch, and never one of the
records the batch had in progress (their offsets are the next owner's)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine
from structlog.testing import capture_logs

from consumers import Group, JobContext, JobRegistry, job
from consumers.dispatch import Dispatcher
from consumers.groups import BoundGroup
from consumers.memory import MemoryBroker, MemorySource
from consumers.runtime import Worker, WorkerConfig
from consumers.source import TopicPartition
from domain import CommandBus
from infra.db import make_engine
from infra.migrate import upgrade
from tests.consumer_harness import EVENTS, SHARDS, Pinged, ping, wait_for

pytestmark = pytest.mark.integration

SLOW = 0


class _Deaf:
    def revoked(self, partitions: set[TopicPartition]) -> None: ...

    def assigned(self, partitions: set[TopicPartition]) -> None: ...


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'hold.db'}")
    upgrade(engine)
    return engine


def _produce(broker: MemoryBroker, n: int) -> None:
    env = ping("topic", n)
    headers = [("ce_id", env.event_id.encode()), ("ce_type", env.type.encode())]
    broker.produce("topic", key=b"k", value=env.payload.encode(), headers=headers)


def test_a_partition_revoked_during_a_held_batch_keeps_the_commit_from_before_it(
    sqlite_engine: Engine,
) -> None:
    broker = MemoryBroker({"topic": 1})
    group = Group(f"h-{uuid.uuid4().hex[:8]}", topics=("topic",), jobs=("slow",))
    # Sorts before the worker's member: the one partition goes to it at the rebalance.
    other = MemorySource(broker, group.name)
    other.member = "member-0"
    calls: Counter[int] = Counter()
    registry = JobRegistry()

    @job("slow", on=Pinged, registry=registry)
    def slow(event: Pinged, ctx: JobContext) -> None:
        calls[event.n] += 1
        if event.n == SLOW:
            other.subscribe(["topic"], _Deaf())  # a member joins while the batch runs
            time.sleep(0.6)  # past a quarter of the poll interval: the batch is held

    worker = Worker(
        sqlite_engine,
        BoundGroup(group, registry),
        # A batch yields after 0.2 s; held after 0.1 s.
        WorkerConfig(bootstrap_servers="memory", shards=SHARDS, max_poll_interval_ms=400),
        bus=CommandBus(sqlite_engine, shards=SHARDS),
        dispatcher=Dispatcher([group], registry, shards=SHARDS),
        events=EVENTS,
        source=lambda: MemorySource(broker, group.name),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    with capture_logs() as logs:
        thread.start()
        for n in (1, 2):
            _produce(broker, n)
        wait_for(lambda: broker.committed(group.name).get(("topic", 0)), what="first commit")
        assert broker.committed(group.name)[("topic", 0)][0] == 2
        for n in (SLOW, 3, 4):  # offsets 2, 3, 4: one batch, cut short after the slow job
            _produce(broker, n)
        wait_for(
            lambda: any(e["event"] == "consumer_batch_released" for e in logs),
            what="the batch held, then released",
        )
        wait_for(lambda: worker.stats.batches >= 2, what="the held batch applied")
        worker.stop()
        thread.join(20)
    assert not thread.is_alive()
    [released] = [e for e in logs if e["event"] == "consumer_batch_released"]
    assert released["revoked"] == ["topic/0"]
    # The slow job's offset was not committed by the worker that lost its partition: the
    # next owner starts at it and finds it done in the inbox.
    assert broker.committed(group.name)[("topic", 0)][0] == 2
    assert calls == Counter({1: 1, 2: 1, SLOW: 1})
    assert worker.stats.exit_reason == "stopped"
