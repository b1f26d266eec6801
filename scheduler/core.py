"""Deciding and recording firings: which slots are due, which were missed, and firing one slot
exactly once (a unique (job, slot) row and the job's outbox message in one transaction).

The scheduler runs no business logic: a firing hands the job to `dispatch`, which the
composition root builds from the consumer runtime (a message on the job's group topic).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

import structlog
from sqlalchemy import Connection, Engine, update

from outbox import audit
from outbox.scheduler_state import FiringRecord, last_scheduled_slot
from outbox.schema import scheduler_firings_table as firings
from outbox.sql import insert_ignoring_duplicate
from outbox.types import utcnow
from scheduler.errors import LostLeadership
from scheduler.lease import LeaderLease
from scheduler.metrics import SchedulerMetrics
from scheduler.schedule import Entry

__all__ = [
    "Dispatch",
    "Firing",
    "Outcome",
    "Scheduler",
]

log = structlog.get_logger(__name__)

# How far back a scheduler looks for late slots of a job that fired long ago (a slot older
# than its grace is only counted as missed, so this bounds the counting, not the firing).
LOOKBACK = timedelta(days=7)


class Outcome(StrEnum):
    DISPATCHED = "dispatched"  # its message is in the outbox
    LOCKED = "locked"  # a unique job's lock held: the same work is already queued
    MISSED = "missed"  # found after its grace time: not fired (the latest missed slot)


@dataclass(frozen=True, slots=True)
class Firing:
    """What a dispatch receives: the job and the slot it stands for."""

    job: str
    slot: datetime
    params: Mapping[str, str] = field(default_factory=dict)
    manual: bool = False


class Dispatch(Protocol):
    def __call__(self, conn: Connection, firing: Firing) -> str | None:
        """Queue the job's message in the caller's transaction; its id, or None when a unique
        job's lock holds (nothing queued)."""


class Scheduler:
    """Fires the schedule's slots while its lease is held. Every method takes the time from the
    injected clock, so tests drive slots without waiting for them."""

    def __init__(
        self,
        engine: Engine,
        schedule: Sequence[Entry],
        dispatch: Dispatch,
        *,
        lease: LeaderLease,
        clock: Callable[[], datetime] = utcnow,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics or SchedulerMetrics()
        self.entries = {entry.job: entry for entry in schedule}
        self.dispatch = dispatch
        self.lease = lease
        self._clock = clock
        self._catch_up_pending = False

    @property
    def owner(self) -> str:
        return self.lease.owner

    def entry(self, job: str) -> Entry:
        try:
            return self.entries[job]
        except KeyError:
            raise LookupError(
                f"{job!r} is not scheduled; scheduled jobs: {', '.join(sorted(self.entries))}"
            ) from None

    # -- leadership ---------------------------------------------------------------------------

    def heartbeat(self) -> bool:
        """Renew or take the lease; on taking it, fire what the previous leader left due (and
        again on the next heartbeat if that failed midway)."""
        was = self.lease.held
        leads = self.lease.tick()
        self.metrics.leader.set(1 if leads else 0)
        if leads and (not was or self._catch_up_pending):
            self._catch_up_pending = True
            self.catch_up()
            self._catch_up_pending = False
        return leads

    def catch_up(self) -> list[FiringRecord]:
        fired: list[FiringRecord] = []
        for job in self.entries:
            fired += self.fire_due(job)
        return fired

    # -- firing -------------------------------------------------------------------------------

    def fire_due(self, job: str) -> list[FiringRecord]:
        """Fire the job's due slot(s) since its last scheduled firing, if this instance leads.

        Slots older than the grace time are missed: logged, and the newest of them recorded so
        it is not reported again. Late slots within grace fire once for the newest (coalesce),
        or each in turn.
        """
        entry = self.entry(job)
        if not self.lease.held:
            return []
        now = self._clock()
        with self.engine.connect() as conn:
            last = last_scheduled_slot(conn, job)
        start = now - entry.grace if last is None else max(last, now - LOOKBACK)
        # A job that never fired (new, or a new database) starts with its latest slot in grace:
        # there is no history of its own to catch up.
        slots = entry.slots(start, now)[-1:] if last is None else entry.slots(start, now)
        if not slots:
            return []
        missed = [slot for slot in slots if now - slot > entry.grace]
        late = [slot for slot in slots if now - slot <= entry.grace]
        done: list[FiringRecord] = []
        if missed:
            self.metrics.missed_slots.labels(job).inc(len(missed))
            log.warning(
                "scheduler_slots_missed",
                job=job,
                missed=len(missed),
                first=missed[0].isoformat(),
                last=missed[-1].isoformat(),
                grace_s=entry.grace_s,
                since_last_firing=last.isoformat() if last else None,
            )
            if not late:
                done += self._fire(job, missed[-1], Outcome.MISSED, coalesced=len(missed) - 1)
        if late and entry.coalesce:
            if len(late) > 1:
                log.info(
                    "scheduler_slots_coalesced",
                    job=job,
                    skipped=[slot.isoformat() for slot in late[:-1]],
                    fired=late[-1].isoformat(),
                )
            done += self._fire(job, late[-1], None, coalesced=len(late) - 1)
        else:
            for slot in late:
                done += self._fire(job, slot, None, coalesced=0)
        return done

    def _fire(
        self, job: str, slot: datetime, outcome: str | None, *, coalesced: int
    ) -> list[FiringRecord]:
        try:
            with self.engine.begin() as conn:
                now = self._clock()
                self.lease.fence(conn, now)
                record = self._insert(
                    conn,
                    Firing(job, slot),
                    now=now,
                    outcome=outcome,
                    coalesced=coalesced,
                    actor=None,
                )
        except LostLeadership as exc:
            log.warning("scheduler_firing_fenced", job=job, slot=slot.isoformat(), error=str(exc))
            self.lease.epoch = None
            self.metrics.leader.set(0)
            self.metrics.firings.labels(job, "fenced").inc()
            return []
        if record is None:
            log.info("scheduler_slot_already_fired", job=job, slot=slot.isoformat())
            return []
        self.metrics.firings.labels(job, record.outcome).inc()
        if record.outcome != Outcome.MISSED:
            self.metrics.last_fired.labels(job).set(record.fired_at.timestamp())
        return [record]

    def run_now(
        self,
        job: str,
        *,
        params: Mapping[str, str] | None = None,
        actor: str,
        reason: str | None = None,
    ) -> FiringRecord:
        """An operator's firing (`outbox schedule run`): now, whoever leads, audited."""
        now = self._clock()
        firing = Firing(job, now, dict(params or {}), manual=True)
        with self.engine.begin() as conn:
            record = self._insert(conn, firing, now=now, outcome=None, coalesced=0, actor=actor)
            if record is None:  # pragma: no cover - a microsecond-equal second run
                raise LookupError(f"{job} was run at this very moment already")
            audit.record(
                conn,
                at=now,
                actor=actor,
                action="schedule-run",
                target=f"job:{job}",
                reason=reason,
                details={
                    "params": dict(firing.params),
                    "outcome": record.outcome,
                    "message_id": record.message_id,
                },
            )
        log.info(
            "scheduler_job_run",
            job=job,
            actor=actor,
            outcome=record.outcome,
            message_id=record.message_id,
        )
        return record

    def _insert(
        self,
        conn: Connection,
        firing: Firing,
        *,
        now: datetime,
        outcome: str | None,
        coalesced: int,
        actor: str | None,
    ) -> FiringRecord | None:
        """The (job, slot) row first: a second instance's insert of the same slot waits for
        this transaction and then finds the row, so only one of them dispatches."""
        record = FiringRecord(
            job=firing.job,
            slot=firing.slot,
            fired_at=now,
            owner=self.owner,
            outcome=outcome or Outcome.DISPATCHED,
            message_id=None,
            coalesced=coalesced,
            manual=firing.manual,
            actor=actor,
        )
        params = json.dumps(dict(firing.params), sort_keys=True) if firing.params else None
        if not insert_ignoring_duplicate(conn, firings, {**asdict(record), "params": params}):
            return None
        if outcome is not None:  # a missed slot: recorded, not dispatched
            return record
        message_id = self.dispatch(conn, firing)
        record = replace(
            record,
            message_id=message_id,
            outcome=Outcome.DISPATCHED if message_id else Outcome.LOCKED,
        )
        conn.execute(
            update(firings)
            .where(firings.c.job == firing.job, firings.c.slot == firing.slot)
            .values(message_id=message_id, outcome=record.outcome)
        )
        log.info(
            "scheduler_fired",
            job=firing.job,
            slot=firing.slot.isoformat(),
            outcome=record.outcome,
            message_id=message_id,
            coalesced=coalesced,
            manual=firing.manual,
        )
        return record
