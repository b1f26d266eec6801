"""A relay and consumer workers in threads against the embedded broker, with test jobs.

Each test gets its own group name and topics (Kafka state outlives a test) and its own job
registry; effects are counted in a real table (visitor_activity) so that "once" is checked
in the database, not in Python.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from consumers import BatchFinished, Group, JobContext, JobRegistry, job
from consumers.dispatch import Dispatcher
from consumers.groups import BoundGroup
from consumers.metrics import ConsumerMetrics
from consumers.runtime import Worker, WorkerConfig
from domain import CommandBus
from domain.events import DomainEvent, EventRegistry
from domain.schema import visitor_activity
from jobs.config import AppConfig
from outbox import Envelope, append, outbox_table
from outbox.schema import failed_jobs_table, inbox_table
from outbox.types import utcnow
from relay import KafkaPublisher, Publisher, Relay, RelayConfig, RelayMetrics, ensure_topics
from tests.kafka_helpers import fresh_topic, wait_for

SHARDS = 8
EVENTS = EventRegistry()
EVENTS.register(BatchFinished)  # the runtime's own event, for batch follow-ups


@EVENTS.register
class Pinged(DomainEvent):
    TYPE = "test.pinged"
    n: int
    note: str = ""


@EVENTS.register
class Chore(DomainEvent):
    TYPE = "test.chore"
    n: int


def new_group(
    bootstrap: str, jobs: tuple[str, ...], *, high: bool = False, topic: str | None = None
) -> Group:
    group = Group(
        f"g-{uuid.uuid4().hex[:10]}",
        topics=(topic or fresh_topic(bootstrap),),
        jobs=jobs,
        high_topics=(fresh_topic(bootstrap),) if high else (),
    )
    ensure_topics(bootstrap, group.internal_topics())
    return group


def counting(
    bootstrap: str, scope: str, name: str = "count", **group: Any
) -> tuple[JobRegistry, Group]:
    """A registry with one job counting each ping in `scope`, and a fresh group running it."""
    registry = JobRegistry()

    @job(name, on=Pinged, registry=registry)
    def count(event: Pinged, ctx: JobContext) -> None:
        bump(ctx.connection, scope, event.n)

    return registry, new_group(bootstrap, (name,), **group)


def bump(conn: Connection, scope: str, n: int) -> None:
    """One effect for message n: a counter row in a real table."""
    v = visitor_activity
    now = utcnow()
    where = (v.c.tenant_id == scope) & (v.c.visitor_id == str(n))
    if not conn.execute(update(v).where(where).values(interactions=v.c.interactions + 1)).rowcount:
        conn.execute(
            insert(v).values(
                tenant_id=scope,
                visitor_id=str(n),
                first_seen_at=now,
                last_seen_at=now,
                interactions=1,
            )
        )


def effects(engine: Engine, scope: str) -> dict[int, int]:
    v = visitor_activity
    with engine.connect() as conn:
        rows = conn.execute(
            select(v.c.visitor_id, v.c.interactions).where(v.c.tenant_id == scope)
        ).all()
    return {int(k): c for k, c in rows}


def inbox_rows(engine: Engine, group: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(inbox_table).where(inbox_table.c.group_name == group)).all()
        )


def failed_rows(engine: Engine, group: str) -> list[Any]:
    f = failed_jobs_table
    with engine.connect() as conn:
        return list(conn.execute(select(f).where(f.c.group_name == group).order_by(f.c.id)).all())


def count_failed(engine: Engine, group: str) -> int:
    f = failed_jobs_table
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(f).where(f.c.group_name == group)
            ).scalar_one()
        )


def ping(
    topic: str, n: int, *, event_id: str | None = None, key: str | None = None, note: str = ""
) -> Envelope:
    return Envelope(
        event_id=event_id or str(uuid.uuid4()),
        topic=topic,
        key=key or f"k-{n}",
        type=Pinged.TYPE,
        payload=json.dumps({"n": n, "note": note}),
        occurred_at=utcnow(),
        headers={"schema_version": "1", "correlation_id": f"corr-{n}"},
    )


def chore(topic: str, n: int, *, key: str | None = None) -> Envelope:
    return Envelope(
        event_id=str(uuid.uuid4()),
        topic=topic,
        key=key or f"c-{n}",
        type=Chore.TYPE,
        payload=json.dumps({"n": n}),
        occurred_at=utcnow(),
        headers={"schema_version": "1"},
    )


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(outbox_table)
                .where(outbox_table.c.status == "pending")
            ).scalar_one()
        )


@dataclass
class Harness:
    engine: Engine
    bootstrap: str
    group: Group
    registry: JobRegistry
    groups: list[Group] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    events: EventRegistry = EVENTS
    job_config: AppConfig = field(default_factory=AppConfig)
    # The workers' clock (ctx.now, the commands they run) and, optionally, their command bus.
    clock: Callable[[], datetime] = utcnow
    bus: CommandBus | None = None
    _threads: list[tuple[Any, threading.Thread]] = field(default_factory=list)

    @property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher([self.group, *self.groups], self.registry, shards=SHARDS)

    def write(self, envelopes: list[Envelope]) -> None:
        with self.engine.begin() as conn:
            append(conn, envelopes, shards=SHARDS)

    def in_transaction(self, fn: Callable[[Connection], Any]) -> Any:
        with self.engine.begin() as conn:
            return fn(conn)

    def worker(
        self,
        group: Group | None = None,
        *,
        metrics: ConsumerMetrics | None = None,
        **overrides: Any,
    ) -> Worker:
        config = {
            "bootstrap_servers": self.bootstrap,
            "shards": SHARDS,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "max_poll_interval_ms": 6000,
            "poll_timeout_ms": 200,
            # KAFKA_CLIENT=confluent runs every harness test on the librdkafka source.
            "kafka_client": os.environ.get("KAFKA_CLIENT", "kafka-python"),
            **self.config,
            **overrides,
        }
        return Worker(
            self.engine,
            BoundGroup(group or self.group, self.registry),
            WorkerConfig(**config),
            bus=self.bus or CommandBus(self.engine, shards=SHARDS, clock=self.clock),
            dispatcher=self.dispatcher,
            job_config=self.job_config,
            events=self.events,
            clock=self.clock,
            metrics=metrics,
        )

    def start_relay(self, metrics: RelayMetrics | None = None) -> Relay:
        def publisher() -> Publisher:
            return KafkaPublisher(self.bootstrap, client_id="test-relay")

        relay = Relay(
            self.engine,
            publisher,
            RelayConfig(shards=SHARDS, lease_ttl_s=5.0, poll_max_s=0.1, backoff_base_s=0.2),
            metrics=metrics,
        )
        self._start(relay)
        return relay

    def start_worker(
        self,
        group: Group | None = None,
        *,
        metrics: ConsumerMetrics | None = None,
        **overrides: Any,
    ) -> Worker:
        worker = self.worker(group, metrics=metrics, **overrides)
        self._start(worker)
        return worker

    def _start(self, runner: Any) -> None:
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        self._threads.append((runner, thread))

    def stop(self, runner: Any | None = None) -> None:
        for item in list(self._threads):
            if runner is None or item[0] is runner:
                item[0].stop()
                item[1].join(timeout=30)
                assert not item[1].is_alive(), f"{type(item[0]).__name__} did not stop"
                self._threads.remove(item)


@contextmanager
def harness(
    engine: Engine,
    bootstrap: str,
    group: Group,
    registry: JobRegistry,
    *,
    events: EventRegistry = EVENTS,
    job_config: AppConfig | None = None,
    groups: tuple[Group, ...] = (),
    clock: Callable[[], datetime] = utcnow,
    bus: CommandBus | None = None,
    **config: Any,
) -> Iterator[Harness]:
    h = Harness(
        engine,
        bootstrap,
        group,
        registry,
        groups=list(groups),
        config=config,
        events=events,
        job_config=job_config or AppConfig(),
        clock=clock,
        bus=bus,
    )
    try:
        yield h
    finally:
        h.stop()


__all__ = [
    "EVENTS",
    "SHARDS",
    "Chore",
    "Harness",
    "Pinged",
    "bump",
    "chore",
    "count_failed",
    "counting",
    "effects",
    "failed_rows",
    "harness",
    "inbox_rows",
    "new_group",
    "pending",
    "ping",
    "wait_for",
]
