"""Run a job without a broker: the real attempt path and middleware on a given database.

For job authors' tests, as river's `rivertest` and dramatiq's StubBroker are for theirs.
`JobRunner` turns an event into the Kafka record the relay would publish (CloudEvents
headers `ce_id`, `ce_type`, `ce_source`, `ce_time`, `outbox_id`, the envelope's own headers
such as `tenant_id`), reads it as a worker does (`consumers.incoming`: checks, decoding, the
jobs it asks for) and runs it as one poll batch (`consumers._internal.poll_batch`): the
inbox claim (exactly once), a savepoint per job, the middleware (tries and back-off, time
limit, unique locks, batch follow-ups, permanent errors recorded as failed jobs with their
reason) and the follow-up outbox rows, all in one transaction; `transactional=False` jobs
then run after it with transactions of their own (`consumers._internal.after_commit`), as a
worker runs them.

    from consumers.testing import JobRunner, run_job

    result = run_job(engine, "generate-product-blurhash", ProductImageUploaded(...),
                     key="p-1", tenant_id="t-1", config=AppConfig(storage_dir=tmp))
    assert result.outcome == "done"        # "retry", "failed" (with .reason) or "duplicate"
    result.dispatched                      # the outbox rows the attempt wrote

    runner = JobRunner(engine, config=AppConfig(...))
    runner.run("send-appointment-reminder", due)  # one attempt: "retry" if tries are left
    runner.drain("notifications")          # the outbox's rows for the group, retries included
    runner.dispatch("prune-outbox", due)   # through the outbox, as the scheduler does

No Kafka, no relay and no thread: everything runs in the calling thread and returns when
the record is settled (a job's own `timeout_s` bounds it; `drain` stops after `max_records`).
A job past its time limit is failed or retried as in a worker; replacing the worker, which
follows in the runtime, has nothing to replace here. Offsets, lanes, rebalances and
liveness are the worker's (tests of the runtime keep a broker: tests/consumer_harness.py).
`drain()` plays the relay for the runner's groups: it reads the pending outbox rows of
their topics (events the domain wrote, dispatched jobs, retry copies) in id order and runs
each once; time jumps for them (a retry or a delayed dispatch runs now, as if its time had
come). The rows stay pending in the outbox (no relay marked them published).

`db` is an Engine, or a Connection whose transaction the caller controls: then the batch
runs in a savepoint on it (nothing commits; the caller sees the effects and rolls back), and
`transactional=False` jobs, which need transactions of their own, are refused.

Every runtime internal this module uses is imported below, in one place.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, select

from consumers import store
from consumers._internal.after_commit import run_deferred
from consumers._internal.attempt_path import AttemptPath, BatchScope, OwnScope
from consumers._internal.held_retries import DelayedRetries
from consumers._internal.poll_batch import BatchRunner, Outcome
from consumers.dispatch import Dispatcher
from consumers.groups import GROUPS, BoundGroup, Group
from consumers.headers import Headers
from consumers.incoming import Incoming, read
from consumers.job import Job, JobRegistry, jobs
from consumers.memory import MemoryRecord
from consumers.metrics import ConsumerMetrics
from consumers.middleware import Line, MiddlewareEnv, build_stack
from consumers.testing.records import CE_SOURCE, Written, record_of
from domain.bus import CommandBus
from domain.events import DomainEvent, EventRegistry
from domain.events import registry as event_types
from outbox.envelope import canonical_json
from outbox.schema import outbox_table
from outbox.types import utcnow

__all__ = ["CE_SOURCE", "JobOutcome", "JobResult", "JobRunner", "Written", "record_of", "run_job"]

SHARDS = 8
MAX_PAYLOAD_BYTES = 1024 * 1024

JobOutcome = Literal["done", "retry", "failed", "duplicate"]
_OUTCOMES: dict[str, JobOutcome] = {
    "processed": "done",
    "retry_scheduled": "retry",
    "failed": "failed",
    "duplicate": "duplicate",
}


@dataclass(frozen=True)
class JobResult:
    group: str
    job: str | None
    event_id: str
    outcome: JobOutcome
    attempt: int
    reason: str | None = None  # why it failed or is retried ("exception", "record_mismatch"...)
    error: str | None = None  # "ExceptionType: message"
    line: Line = field(default_factory=dict)  # the runtime's `job_handled` line
    dispatched: tuple[Written, ...] = ()  # what its batch wrote to the outbox


class JobRunner:
    """Runs jobs of the given registry (default: the global one) through the runtime's
    attempt path, one record per batch, on `db` (an Engine, or a Connection in a
    transaction the caller controls)."""

    def __init__(
        self,
        db: Engine | Connection,
        *,
        config: object = None,
        registry: JobRegistry = jobs,
        groups: Sequence[Group] | None = None,
        events: EventRegistry = event_types,
        bus: CommandBus | None = None,
        clock: Callable[[], datetime] = utcnow,
        shards: int = SHARDS,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.db = db
        self.engine = db if isinstance(db, Engine) else db.engine
        self.registry = registry
        self.groups = list(groups if groups is not None else GROUPS.values())
        self.events = events
        self.clock = clock
        self.shards = shards
        self.max_payload_bytes = max_payload_bytes
        self.dispatcher = Dispatcher(self.groups, registry, shards=shards, clock=clock)
        self._bus = bus or CommandBus(self.engine, shards=shards, clock=clock)
        self._config = config
        self._bound: dict[str, BoundGroup] = {}
        self._paths: dict[str, AttemptPath] = {}
        self._handled: set[int] = set()  # the outbox rows drain() handed out
        self._offset = 0

    # -- what a test calls ------------------------------------------------------------------

    def run(
        self,
        job: str,
        event: DomainEvent,
        *,
        key: str | None = None,
        tenant_id: str | None = None,
        event_id: str | None = None,
        headers: dict[str, str] | None = None,
        occurred_at: datetime | None = None,
        topic: str | None = None,
    ) -> JobResult:
        """One attempt of `job` on `event`, delivered as the relay would deliver a dispatch
        of it (its group's `.jobs` topic, `x-job`), or, given `topic` (one its group reads),
        as a domain event there (only `job` runs, not the group's other jobs for the type).
        Nothing is written to the outbox for it; the same `event_id` again is a duplicate."""
        group = self.group_of(job)
        declared = self.registry.get(job)
        if topic is not None and topic not in group.subscriptions():
            raise LookupError(f"group {group.name!r} does not read topic {topic!r}")
        given = dict(headers or {})
        if tenant_id is not None:
            given["tenant_id"] = tenant_id
        envelope_headers = {
            **({Headers.JOB: job} if topic is None else {}),
            Headers.SCHEMA_VERSION: str(event.SCHEMA_VERSION),
            **given,
        }
        message_id = event_id or str(uuid.uuid4())
        self._offset += 1
        record = record_of(
            event_id=message_id,
            topic=topic or group.jobs_topic,
            key=key or message_id,
            type_=event.TYPE,
            payload=canonical_json(event.model_dump(mode="json")),
            headers=envelope_headers,
            created_at=occurred_at or self.clock(),
            offset=self._offset,
        )
        results = self._deliver(group, record, only=declared)
        assert len(results) == 1  # noqa: S101 - one job asked for
        return results[0]

    def dispatch(self, job: str, event: DomainEvent, *, key: str | None = None) -> str | None:
        """Dispatch `job` through the outbox as a job or the scheduler does (the runtime's
        Dispatcher: unique locks taken, None when one holds), committed (or on the caller's
        connection); `drain()` runs it."""
        if isinstance(self.db, Connection):
            return self.dispatcher.dispatch(self.db, job, event, key=key)
        with self.engine.begin() as conn:
            return self.dispatcher.dispatch(conn, job, event, key=key)

    def drain(self, *groups: str, retries: bool = True, max_records: int = 100) -> list[JobResult]:
        """Run what the outbox holds for these groups (default: the runner's), as the relay
        and their workers would: pending rows of their topics, in id order, each once per
        runner (rows written by the jobs run here are run too). `retries=False` leaves the
        retry copies for a later drain (to change the world between two attempts).
        Raises after `max_records` records (a job that re-dispatches itself for ever)."""
        results: list[JobResult] = []
        chosen = [g for g in self.groups if not groups or g.name in groups]
        if len(chosen) < len(set(groups)):
            raise LookupError(f"unknown group(s) among {groups}")
        topics: dict[str, list[Group]] = {}
        for g in chosen:
            for topic in g.subscriptions():
                if retries or topic != g.retry_topic:
                    topics.setdefault(topic, []).append(g)
        for _ in range(max_records):
            row = self._next_row(list(topics))
            if row is None:
                return results
            self._handled.add(row.id)
            record = record_of(
                event_id=row.event_id,
                topic=row.topic,
                key=row.key,
                type_=row.type,
                payload=row.payload,
                headers=json.loads(row.headers) if row.headers else {},
                created_at=row.created_at,
                outbox_id=row.id,
                offset=row.id,
            )
            for group in topics[row.topic]:  # each group reads the topic on its own
                results += self._deliver(group, record, only=None)
        raise RuntimeError(f"drain: still records after {max_records}; a job loops?")

    def group_of(self, job: str) -> Group:
        return self.dispatcher.group_of(job)

    # -- one record, one batch ---------------------------------------------------------------

    def _deliver(self, group: Group, record: MemoryRecord, *, only: Job | None) -> list[JobResult]:
        bound = self._bound_group(group)
        now = self.clock()
        inc = read(record, bound, self.events, max_payload_bytes=self.max_payload_bytes, now=now)
        if inc is None:
            if only is not None:
                raise LookupError(f"group {group.name!r} has no job for {record.topic!r}")
            return []
        if only is not None and inc.poison is None:
            if only not in inc.jobs:
                raise LookupError(f"job {only.name!r} is not run for this record")
            inc.jobs = [only]
        # A retry runs now, whatever its x-not-before says: time jumps (see the docstring).
        released = {id(inc)} if inc.not_before is not None else set()
        before = self._last_outbox_id()
        if isinstance(self.db, Engine):
            out = self._batch(bound, inc, released, now)
        else:
            out = self._batch_on(self.db, bound, inc, now)
        written = self._written_since(before)
        return [_result(group.name, line, written) for line in out.lines]

    def _batch(
        self, bound: BoundGroup, inc: Incoming, released: set[int], now: datetime
    ) -> Outcome:
        path = self._path(bound)
        runner = BatchRunner(
            self.engine, bound, path, shards=self.shards, budget_s=3600, stopping=lambda: False
        )
        started = time.monotonic()
        out = runner.run([(inc.record, inc)], released, now)
        if out.deferred:
            run_deferred(
                path,
                OwnScope(self.engine, bound.name),
                out,
                started=started,
                budget_s=3600,
                stopping=threading.Event(),
                delayed=DelayedRetries(),
                clock=self.clock,
            )
        if out.rest and not out.replace:
            raise RuntimeError(f"record not settled: {out.lines}")
        # out.replace: a job timed out inside a database call; its attempt was recorded on
        # a fresh connection (its line is in out.lines) and the batch around it was lost.
        return out

    def _batch_on(
        self, conn: Connection, bound: BoundGroup, inc: Incoming, now: datetime
    ) -> Outcome:
        """The poll batch's steps (consumers._internal.poll_batch) in a savepoint of the caller's
        transaction."""
        if inc.poison is not None:
            raise ValueError(f"poison record ({inc.poison.reason}): {inc.poison}")
        if any(not j.transactional for j in inc.jobs):
            raise TypeError("transactional=False jobs need an Engine (transactions of their own)")
        path = self._path(bound)
        out = Outcome()
        pairs = {(j.name, inc.message_id): inc.attempt for j in inc.jobs}
        digests = {inc.message_id: inc.digest} if inc.digest else {}
        tenants = store.tenants_by_message([(inc.message_id, inc.headers)])
        with conn.begin_nested():
            states = store.claim(conn, bound.name, pairs, now, digests=digests, tenants=tenants)
            scope = BatchScope(conn, bound.name, states)
            for declared in inc.jobs:
                out.lines.append(path.run(scope, inc, declared, now).handled)
            for m in path.stack:
                m.batch_ending(conn)
            store.mark_done(conn, bound.name, scope.retried, now)
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _bound_group(self, group: Group) -> BoundGroup:
        if group.name not in self._bound:
            self._bound[group.name] = BoundGroup(group, self.registry)
        return self._bound[group.name]

    def _path(self, bound: BoundGroup) -> AttemptPath:
        if bound.name not in self._paths:
            env = MiddlewareEnv(bound, self.dispatcher, ConsumerMetrics(), self.shards)
            self._paths[bound.name] = AttemptPath(
                build_stack(env),
                group=bound.name,
                bus=self._bus,
                dispatcher=self.dispatcher,
                job_config=self._config,
            )
        return self._paths[bound.name]

    def _query(self, statement: Any) -> Any:
        if isinstance(self.db, Connection):
            return self.db.execute(statement).all()
        with self.engine.connect() as conn:
            return conn.execute(statement).all()

    def _last_outbox_id(self) -> int:
        rows = list(self._query(select(func.max(outbox_table.c.id))))
        return int(rows[0][0] or 0)

    def _written_since(self, after: int) -> tuple[Written, ...]:
        o = outbox_table
        rows = self._query(select(o).where(o.c.id > after).order_by(o.c.id))
        return tuple(
            Written(
                r.id, r.topic, r.key, r.type, json.loads(r.payload), json.loads(r.headers or "{}")
            )
            for r in rows
        )

    def _next_row(self, topics: list[str]) -> Any:
        o = outbox_table
        rows = self._query(
            select(o).where(o.c.topic.in_(topics), o.c.status == "pending").order_by(o.c.id)
        )
        return next((r for r in rows if r.id not in self._handled), None)


def _result(group: str, line: Line, written: tuple[Written, ...]) -> JobResult:
    return JobResult(
        group=group,
        job=line.get("job"),
        event_id=str(line.get("event_id")),
        outcome=_OUTCOMES[str(line["outcome"])],
        attempt=int(line.get("attempt") or 1),
        reason=line.get("reason"),
        error=line.get("error"),
        line=line,
        dispatched=written,
    )


def run_job(
    db: Engine | Connection,
    job: str,
    event: DomainEvent,
    *,
    config: object = None,
    registry: JobRegistry = jobs,
    groups: Sequence[Group] | None = None,
    events: EventRegistry = event_types,
    now: datetime | None = None,
    **details: Any,
) -> JobResult:
    """One attempt of `job` on `event` (JobRunner.run's keywords: key, tenant_id, event_id,
    headers, occurred_at). `now`: the job's clock (ctx.now), fixed."""
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    runner = JobRunner(
        db, config=config, registry=registry, groups=groups, events=events, clock=clock
    )
    return runner.run(job, event, **details)
