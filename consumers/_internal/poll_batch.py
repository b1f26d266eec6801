"""One poll batch in one transaction, and what it did (applied only after it commits).

Per batch: the inbox rows of its (job, message) pairs are claimed in one statement (those
already there are the duplicates); each job runs through the attempt path in a savepoint of
its own; poison is recorded; staged batch effects are applied; commit. A batch that the
database refuses for a reason that will not go away (a value it cannot store) is handled
again one record per transaction (`run_isolated`): the record whose own transaction is
refused is recorded as raw bytes with the reason, and its partition moves on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import StatementError

from consumers import store
from consumers._internal.attempt_path import AttemptPath, BatchLost, BatchScope, OwnScope, line
from consumers._internal.backends import session_id, terminate
from consumers._internal.bounded import escaped
from consumers._internal.failure_records import record_failure, record_unrecordable
from consumers.groups import BoundGroup
from consumers.incoming import Incoming
from consumers.job import Job
from consumers.middleware import Line, Middleware
from consumers.source import Record, TopicPartition
from outbox.schema import is_transient

__all__ = ["BatchRunner", "Item", "Outcome"]

log = structlog.get_logger("consumers._internal.poll_batch")

Item = tuple[Record, Incoming | None]


@dataclass
class Outcome:
    """What one batch did; applied to offsets, logs and metrics only after it commits."""

    advance: dict[TopicPartition, int] = field(default_factory=dict)
    hold: list[Incoming] = field(default_factory=list)  # retries not due yet
    released: list[Incoming] = field(default_factory=list)  # held retries that ran now
    rest: list[Item] = field(default_factory=list)  # not reached: fetched again
    released_rest: list[Incoming] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    deferred: list[tuple[Incoming, Job]] = field(default_factory=list)  # transactional=False
    ignored: int = 0  # records of types no job of the group handles
    replace: bool = False  # a job timed out: the worker is to be replaced

    def without(self, partitions: set[TopicPartition]) -> Outcome:
        """What is left to apply once these partitions were revoked during the batch
        (consumers._internal.keepalive): their records' effects are durable and logged, but
        their offsets, held retries and unreached records are the next owner's."""

        def kept(inc: Incoming) -> bool:
            return inc.tp not in partitions

        return replace(
            self,
            advance={tp: o for tp, o in self.advance.items() if tp not in partitions},
            hold=[inc for inc in self.hold if kept(inc)],
            released=[inc for inc in self.released if kept(inc)],
            rest=[(r, i) for r, i in self.rest if (r.topic, r.partition) not in partitions],
            released_rest=[inc for inc in self.released_rest if kept(inc)],
        )

    def merge(self, other: Outcome) -> None:
        self.advance.update(other.advance)
        self.hold += other.hold
        self.released += other.released
        self.rest += other.rest
        self.released_rest += other.released_rest
        self.lines += other.lines
        self.deferred += other.deferred
        self.ignored += other.ignored
        self.replace = self.replace or other.replace


class BatchRunner:
    def __init__(
        self,
        engine: Engine,
        group: BoundGroup,
        path: AttemptPath,
        *,
        shards: int,
        budget_s: float,
        stopping: Callable[[], bool],
    ) -> None:
        self.engine = engine
        self.group = group
        self.path = path
        self.shards = shards
        self.budget_s = budget_s
        self.stopping = stopping
        stack = path.stack
        self._ending = [m.batch_ending for m in stack if _overrides(m, "batch_ending")]
        self._discarded = [m.batch_discarded for m in stack if _overrides(m, "batch_discarded")]

    def run(self, items: list[Item], released: set[int], now: datetime) -> Outcome:
        """The batch in one transaction. Raises what the database raised (nothing then
        committed), except for a job timed out inside a database call (`BatchLost`): its
        attempt is recorded on a fresh connection and the outcome says `replace`."""
        pairs = {
            (j.name, inc.message_id): inc.attempt
            for _, inc in items
            if inc is not None and inc.poison is None and not _waits(inc, now, released)
            for j in inc.jobs
            if j.transactional
        }
        digests = {inc.message_id: inc.digest for _, inc in items if inc is not None and inc.digest}
        tenants = store.tenants_by_message(
            (inc.message_id, inc.headers) for _, inc in items if inc is not None
        )
        started = time.monotonic()
        with self.engine.connect() as conn:
            session = session_id(conn)
            try:
                with conn.begin():
                    states = store.claim(
                        conn, self.group.name, pairs, now, digests=digests, tenants=tenants
                    )
                    scope = BatchScope(conn, self.group.name, states)
                    out = self._process(scope, items, released, now, started)
                    for hook in self._ending:
                        hook(conn)
                    store.mark_done(conn, self.group.name, scope.retried, now)
                    store.unclaim(conn, self.group.name, _unreached(out.rest, states))
            except BatchLost as lost:
                self._discard()
                return self._lost(lost, items, session)
            except BaseException:
                self._discard()
                raise
        return out

    def _discard(self) -> None:
        for hook in self._discarded:
            hook()

    def _lost(self, lost: BatchLost, items: list[Item], session: int | None) -> Outcome:
        """A job timed out inside a database call: end the server's session (it still holds
        the batch's locks), record the attempt on a fresh connection, replace the worker.
        Nothing else of the batch committed: it is fetched again by the next worker."""
        terminate(self.engine, session)
        attempt = lost.attempt
        self.path.record(OwnScope(self.engine, self.group.name), attempt)
        log.warning(
            "consumer_job_timed_out_in_database",
            group=self.group.name,
            job=attempt.job.name,
            event_id=attempt.incoming.event_id,
        )
        return Outcome(rest=list(items), lines=[attempt.handled], replace=True)

    def _process(
        self,
        scope: BatchScope,
        items: list[Item],
        released: set[int],
        now: datetime,
        started: float,
    ) -> Outcome:
        out = Outcome()
        for index, (record, inc) in enumerate(items):
            if self.stopping() or out.replace or time.monotonic() - started > self.budget_s:
                out.rest = items[index:]
                out.released_rest = [i for _, i in out.rest if i is not None and id(i) in released]
                break
            if inc is None:
                out.ignored += 1
            elif inc.poison is not None:
                named = inc.jobs[0] if len(inc.jobs) == 1 else None
                record_failure(
                    scope.conn,
                    self.group.group,
                    inc,
                    named,
                    reason=inc.poison.reason,
                    error=None,
                    message=str(inc.poison),
                    now=now,
                    shards=self.shards,
                )
                out.lines.append(line(inc, named, "failed", 0.0, reason=inc.poison.reason))
            elif _waits(inc, now, released):
                out.hold.append(inc)
            elif _reused(inc, scope.states):
                self._reused(scope, inc, now, out)
            else:
                for declared in inc.jobs:
                    if not declared.transactional:
                        out.deferred.append((inc, declared))
                        continue
                    attempt = self.path.run(scope, inc, declared, now)
                    out.lines.append(attempt.handled)
                    out.replace = out.replace or attempt.replace_worker
            if inc is not None and id(inc) in released:
                out.released.append(inc)
            else:
                out.advance[(record.topic, record.partition)] = record.offset + 1
        return out

    def _reused(self, scope: BatchScope, inc: Incoming, now: datetime, out: Outcome) -> None:
        """The event id was handled before with another payload: not a duplicate to skip
        quietly (a producer reusing ids, or a forged record), and not to run either."""
        message = (
            f"event id {inc.event_id} was handled before with a different payload; "
            "this record is not run (compare it with the first in the DLQ)"
        )
        log.warning(
            "consumer_event_id_reused",
            group=self.group.name,
            event_id=inc.event_id,
            topic=inc.record.topic,
            partition=inc.record.partition,
            offset=inc.record.offset,
        )
        named = inc.jobs[0] if len(inc.jobs) == 1 else None
        record_failure(
            scope.conn,
            self.group.group,
            inc,
            named,
            reason="reused_id",
            error=None,
            message=message,
            now=now,
            shards=self.shards,
        )
        out.lines.append(line(inc, named, "failed", 0.0, reason="reused_id"))

    def run_isolated(self, items: list[Item], released: set[int], now: datetime) -> Outcome:
        """The batch again, one record per transaction: a record the database refuses is
        recorded as raw bytes and passed. A transient failure stops here (the rest is
        fetched again)."""
        out = Outcome()
        for index, (record, inc) in enumerate(items):
            if self.stopping():
                out.rest += items[index:]
                break
            try:
                out.merge(self.run([(record, inc)], released, now))
            except StatementError as exc:
                if is_transient(exc):
                    out.rest += items[index:]
                    out.released_rest += [
                        i for _, i in items[index:] if i is not None and id(i) in released
                    ]
                    break
                out.merge(self._unrecordable(record, inc, released, now, exc))
            if out.replace:
                out.rest += items[index + 1 :]
                break
        return out

    def _unrecordable(
        self,
        record: Record,
        inc: Incoming | None,
        released: set[int],
        now: datetime,
        exc: StatementError,
    ) -> Outcome:
        orig = getattr(exc, "orig", None) or exc
        reason = escaped(f"the database refused the record: {type(orig).__name__}: {orig}", 1000)
        with self.engine.begin() as conn:
            record_unrecordable(
                conn, self.group.group, record, reason=reason, now=now, shards=self.shards
            )
        out = Outcome()
        if inc is not None and id(inc) in released:
            out.released.append(inc)
        else:
            out.advance[(record.topic, record.partition)] = record.offset + 1
        if inc is not None:
            out.lines.append(line(inc, None, "failed", 0.0, reason="unrecordable"))
        return out


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


def _reused(inc: Incoming, states: dict[tuple[str, str], store.InboxState]) -> bool:
    for declared in inc.jobs:
        state = states.get((declared.name, inc.message_id))
        if state is not None and state.digest and inc.digest and state.digest != inc.digest:
            return True
    return False


def _waits(inc: Incoming, now: datetime, released: set[int]) -> bool:
    return inc.not_before is not None and inc.not_before > now and id(inc) not in released


def _unreached(
    rest: list[Item], states: dict[tuple[str, str], store.InboxState]
) -> list[tuple[str, str]]:
    """Claimed rows of the messages a cut-short batch did not reach."""
    return [
        (j.name, inc.message_id)
        for _, inc in rest
        if inc is not None and inc.poison is None
        for j in inc.jobs
        if j.transactional and (j.name, inc.message_id) not in states
    ]
