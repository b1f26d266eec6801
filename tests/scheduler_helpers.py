"""A scheduler wired to a test job registry and group, on a clock the test moves."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select

from consumers import Group, JobContext, JobRegistry, job
from consumers.dispatch import Dispatcher
from consumers.messages import ScheduledJobDue
from jobs.schedule import SCHEDULE as DEFAULT_SCHEDULE
from outbox import outbox_table
from outbox.schema import scheduler_firings_table
from scheduler import Entry, Firing, LeaderLease, Scheduler

__all__ = [
    "E2E_GROUP",
    "E2E_JOB",
    "Clock",
    "ForcedLease",
    "SchedulerKit",
    "at",
    "firing_rows",
    "outbox_messages",
    "schedule_only",
]

# The job and group of tests.scheduler_jobs (a CONSUMER_MODULES module for CLI tests).
E2E_GROUP = "sched-e2e"
E2E_JOB = "e2e-tick"
# The group tests.scheduler_jobs declares (CONSUMER_MODULES) for its job.
E2E_TEST_GROUP = Group(E2E_GROUP, topics=(), jobs=(E2E_JOB,))


def schedule_only(**entries: object) -> str:
    """A SCHEDULE value with the default jobs off and these entries on."""
    overrides: dict[str, object] = dict.fromkeys((e.job for e in DEFAULT_SCHEDULE), "off")
    overrides.update({name.replace("_", "-"): value for name, value in entries.items()})
    return json.dumps(overrides)


def at(text: str) -> datetime:
    """`2026-11-22 10:00:00.5` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, text: str) -> None:
        self.now = at(text)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ForcedLease(LeaderLease):
    """A lease that always believes it leads and never checks: two of these are two
    schedulers that both think they are the leader (a split brain)."""

    def tick(self) -> bool:
        self.epoch = 1
        return True

    def fence(self, conn: Connection, now: datetime) -> None:
        return None


@dataclass
class SchedulerKit:
    engine: Engine
    group: Group
    registry: JobRegistry
    dispatcher: Dispatcher
    clock: Clock

    @classmethod
    def create(cls, engine: Engine, clock: Clock) -> SchedulerKit:
        registry = JobRegistry()

        @job("tidy", on=ScheduledJobDue, registry=registry)
        def tidy(event: ScheduledJobDue, ctx: JobContext) -> None:  # pragma: no cover - not run
            return None

        @job(
            "tidy-daily",
            on=ScheduledJobDue,
            registry=registry,
            unique_key=lambda e: e.utc_slot.date().isoformat(),
            unique_for_s=3600,
        )
        def tidy_daily(event: ScheduledJobDue, ctx: JobContext) -> None:  # pragma: no cover
            return None

        group = Group(f"sched-{uuid.uuid4().hex[:8]}", topics=(), jobs=("tidy", "tidy-daily"))
        dispatcher = Dispatcher([group], registry, shards=8, clock=clock)
        return cls(engine, group, registry, dispatcher, clock)

    def dispatch(self, conn: Connection, firing: Firing) -> str | None:
        message = ScheduledJobDue(
            job=firing.job, slot=firing.slot, params=dict(firing.params), manual=firing.manual
        )
        return self.dispatcher.dispatch(conn, firing.job, message, key=firing.job)

    def scheduler(
        self,
        schedule: Sequence[Entry],
        *,
        owner: str,
        ttl_s: float = 30.0,
        lease: type[LeaderLease] = LeaderLease,
    ) -> Scheduler:
        return Scheduler(
            self.engine,
            schedule,
            self.dispatch,
            lease=lease(self.engine, owner=owner, ttl_s=ttl_s, clock=self.clock),
            clock=self.clock,
        )


def firing_rows(engine: Engine, job: str | None = None) -> list[Any]:
    f = scheduler_firings_table
    query = select(f).order_by(f.c.job, f.c.slot)
    if job is not None:
        query = query.where(f.c.job == job)
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def outbox_messages(engine: Engine, topic: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(payload, headers) of each outbox row on `topic`, in id order."""
    o = outbox_table
    with engine.connect() as conn:
        rows = conn.execute(
            select(o.c.payload, o.c.headers).where(o.c.topic == topic).order_by(o.c.id)
        ).all()
    return [(json.loads(payload), json.loads(headers)) for payload, headers in rows]
