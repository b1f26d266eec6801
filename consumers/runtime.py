"""The consumer worker: poll a batch, run its jobs in one transaction, commit, then commit the
Kafka offsets.

Per batch, one transaction: the inbox rows of the batch's (job, message) pairs are claimed
in one statement (those already there are the duplicates); each job runs in a savepoint of
its own (opened only if it touches the database), so a failing job undoes its own writes
and nothing else; its failure is recorded (a delayed retry, or failed_jobs + DLQ) in the
same transaction; commit. Only then are offsets committed, and never past a message whose
transaction is not durable or that waits for its retry time.

Delayed retries do not block their partition: a retry record that is not due yet is held in
memory and the partition moves on; the committed offset stays below it until it has run, so
a crash redelivers it (and the inbox skips whatever already ran).

Priority lanes: while the group's high topics have messages, the other partitions are paused.

Jobs declared `transactional=False` are not run (nor claimed) in the batch's transaction:
they are deferred until it has committed, then each runs with no transaction open and its
outcome (inbox row, or retry / failed) is recorded in a short transaction of its own, all
before the batch's offsets are committed. So they run after their batch's transactional
jobs, and a crash between a run and its record runs it again (such jobs are idempotent).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError

from consumers import store
from consumers.context import (
    JobConfig,
    JobContext,
    JobTimeout,
    OwnTransactionsContext,
    TimeLimiter,
)
from consumers.dispatch import BatchFinished, Dispatcher, Headers
from consumers.errors import ConsumerError, DoNotRetry, WorkerBrokerUnavailable
from consumers.failed import FailedFilter, count_failed
from consumers.failures import record_failure, schedule_retry
from consumers.groups import BoundGroup
from consumers.incoming import Incoming, read
from consumers.incoming import TopicPartition as TP
from consumers.job import Job
from consumers.metrics import ConsumerMetrics
from domain.bus import CommandBus
from domain.events import EventRegistry, registry
from outbox.schema import inbox_table, is_missing_schema
from outbox.types import utcnow

__all__ = ["Worker", "WorkerConfig", "WorkerStats"]

log = structlog.get_logger("consumers.runtime")


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap_servers: str
    shards: int
    max_poll_records: int = 500
    poll_timeout_ms: int = 500
    max_payload_bytes: int = 1024 * 1024
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # A batch stops early (and the rest is fetched again) after half of this, so a slow
    # batch never costs the worker its group membership.
    max_poll_interval_ms: int = 300_000
    # Delayed retries held in memory; past this, the retry partitions pause.
    delayed_cap: int = 10_000
    client_id: str = "outbox-consumer"
    metrics_interval_s: float | None = None


@dataclass
class WorkerStats:
    processed: int = 0
    duplicates: int = 0
    retries: int = 0
    failed: int = 0
    ignored: int = 0
    batches: int = 0
    exit_reason: str = "stopped"  # stopped | replace (a job timed out: start a fresh process)


@dataclass
class _Outcome:
    """What one batch did; applied to offsets, logs and metrics only after it commits."""

    retried: list[tuple[str, str, int]] = field(default_factory=list)
    advance: dict[TP, int] = field(default_factory=dict)
    hold: list[Incoming] = field(default_factory=list)
    released: list[Incoming] = field(default_factory=list)
    rest: list[tuple[Any, Incoming | None]] = field(default_factory=list)
    released_rest: list[Incoming] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    # transactional=False jobs of the batch, run after it commits.
    deferred: list[tuple[Incoming, Job]] = field(default_factory=list)
    ignored: int = 0  # records of types no job of the group handles


class Worker:
    def __init__(
        self,
        engine: Engine,
        group: BoundGroup,
        config: WorkerConfig,
        *,
        bus: CommandBus,
        dispatcher: Dispatcher,
        job_config: JobConfig | None = None,
        events: EventRegistry = registry,
        metrics: ConsumerMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.group = group
        self.config = config
        self.bus = bus
        self.dispatcher = dispatcher
        self.job_config = job_config or JobConfig()
        self.events = events
        self.metrics = metrics or ConsumerMetrics()
        self.clock = clock
        self.stats = WorkerStats()
        self._stopping = threading.Event()
        self._replace = False
        self._delayed: list[tuple[datetime, int, Incoming]] = []
        self._seq = itertools.count()
        self._held: dict[TP, set[int]] = {}
        self._next: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        self._high_first = True
        self._parked: list[Any] = []
        self._tokens: dict[str, tuple[float, float]] = {}
        self._last_metrics = 0.0
        self._failures = 0
        self._limiter = TimeLimiter()
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}
        self._log: Any = log

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the message in flight, commit, leave the group."""
        self._stopping.set()

    def run(self) -> WorkerStats:
        # A logger bound once (structlog resolves its lazy proxy on every call otherwise).
        self._log = log.bind(group=self.group.name)
        self._check_schema()
        consumer = self._connect()
        try:
            while not self._stopping.is_set() and not self._replace:
                records = self._poll(consumer)
                due = self._due()
                if records or due:
                    self._handle(consumer, records, due)
                self._refresh_metrics(consumer)
        finally:
            self._commit(consumer, final=True)
            consumer.close(autocommit=False)  # leaves the group at once
        if self._replace:
            self.stats.exit_reason = "replace"
        log.info("consumer_stopped", group=self.group.name, reason=self.stats.exit_reason)
        return self.stats

    def _check_schema(self) -> None:
        """Fail at start, not at the first message, when the database is not migrated."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(inbox_table.c.message_id).limit(0))
        except DBAPIError as exc:
            if is_missing_schema(exc):
                raise self._not_migrated(exc) from exc
            raise

    @staticmethod
    def _not_migrated(exc: DBAPIError) -> ConsumerError:
        return ConsumerError(f"the database is not migrated ({exc.orig}): run `outbox db upgrade`")

    def _connect(self) -> Any:
        worker = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                worker._revoked({(tp.topic, tp.partition) for tp in revoked})

            def on_partitions_assigned(self, assigned: Any) -> None:
                worker._high_first = True
                log.info(
                    "consumer_assigned",
                    group=worker.group.name,
                    partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned),
                )

        c = self.config
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=c.bootstrap_servers.split(","),
                group_id=self.group.name,
                client_id=c.client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=c.max_poll_records,
                session_timeout_ms=c.session_timeout_ms,
                heartbeat_interval_ms=c.heartbeat_interval_ms,
                max_poll_interval_ms=c.max_poll_interval_ms,
                bootstrap_timeout_ms=5_000,
            )
        except KafkaError as exc:  # 3.x: KafkaTimeoutError 'Unable to bootstrap'
            raise WorkerBrokerUnavailable(
                f"no Kafka broker answered at {c.bootstrap_servers} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
            ) from exc
        consumer.subscribe(topics=list(self.group.group.subscriptions()), listener=Listener())
        return consumer

    def _revoked(self, revoked: set[TP]) -> None:
        """Another worker owns these now; it starts from our committed offsets."""
        self._delayed = [d for d in self._delayed if d[2].tp not in revoked]
        self._parked = [r for r in self._parked if (r.topic, r.partition) not in revoked]
        heapq.heapify(self._delayed)
        for tp in revoked:
            self._held.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    # -- polling ---------------------------------------------------------------------------

    def _poll(self, consumer: Any) -> list[Any]:
        """The next records to handle, in order per partition, high lane first.

        Records fetched but not handled yet (the other lanes' while the high lane has work,
        or the rest of a batch cut short) wait in `_parked`: the consumer's position is past
        them, but the committed offset is not, and nothing later of their partitions is
        handled before them.
        """
        group = self.group.group
        assigned = consumer.assignment()
        high = {tp for tp in assigned if group.lane(tp.topic) == "high"}
        paused: set[Any] = set()
        if high and self._high_first:
            paused |= assigned - high
        if len(self._delayed) >= self.config.delayed_cap:
            paused |= {tp for tp in assigned if tp.topic == group.retry_topic}
        now_paused = consumer.paused()
        if paused - now_paused:
            consumer.pause(*(paused - now_paused))
        if now_paused - paused:
            consumer.resume(*(now_paused - paused))
            _unstick_resumed_partitions(consumer)
        # Only a poll made with the other lanes paused can say the high lane is empty (the
        # first poll after an assignment joins the group and fetches from every partition).
        trusted = bool(high) and self._high_first
        timeout = self.config.poll_timeout_ms
        if trusted or (self._parked and not self._high_first):
            timeout = 0 if self._parked and not self._high_first else min(timeout, 200)
        if self._delayed:
            wait = (self._delayed[0][0] - self.clock()).total_seconds() * 1000
            timeout = int(max(0, min(timeout, wait)))
        polled = consumer.poll(timeout_ms=timeout, max_records=self.config.max_poll_records)
        records = [r for batch in polled.values() for r in batch]
        if not any(group.lane(tp.topic) == "high" for tp in consumer.assignment()):
            return self._unpark(records)
        first = [r for r in records if group.lane(r.topic) == "high"]
        self._parked += [r for r in records if group.lane(r.topic) != "high"]
        if first:
            self._high_first = True
            return first
        if self._high_first and not trusted:
            return []  # not known yet whether the high lane has work
        self._high_first = False  # the high lane is empty: let the others flow
        return self._unpark([])

    def _unpark(self, records: list[Any]) -> list[Any]:
        if not self._parked:
            return records
        limit = self.config.max_poll_records
        batch = (self._parked + records)[:limit]
        self._parked = (self._parked + records)[limit:]
        return batch

    def _due(self) -> list[Incoming]:
        now = self.clock()
        due: list[Incoming] = []
        while self._delayed and self._delayed[0][0] <= now and len(due) < 500:
            due.append(heapq.heappop(self._delayed)[2])
        return due

    # -- one batch -------------------------------------------------------------------------

    def _handle(self, consumer: Any, records: list[Any], due: list[Incoming]) -> None:
        now = self.clock()
        items: list[tuple[Any, Incoming | None]] = [
            (r, read(r, self.group, self.events, max_payload_bytes=self.config.max_payload_bytes))
            for r in records
        ]
        items += [(inc.record, inc) for inc in due]
        released = {id(inc) for inc in due}
        pairs = {
            (j.name, inc.message_id): inc.attempt
            for _, inc in items
            if inc is not None and inc.poison is None and not self._waits(inc, now, released)
            for j in inc.jobs
            if j.transactional
        }
        started = time.monotonic()
        try:
            with self.engine.connect() as conn, conn.begin():
                states = store.claim(conn, self.group.name, pairs, now)
                out = self._process(
                    conn, items=items, states=states, released=released, now=now, started=started
                )
                store.mark_done(conn, self.group.name, out.retried, now)
                store.unclaim(conn, self.group.name, self._unreached(out.rest, states))
        except DBAPIError as exc:
            if is_missing_schema(exc):
                raise self._not_migrated(exc) from exc
            # Nothing of this batch committed: fetch it again after a pause.
            log.warning(
                "consumer_batch_rolled_back",
                group=self.group.name,
                error=str(exc.orig)[:300],
                messages=len(items),
            )
            self._failures += 1
            if self._failures >= 5 and not exc.connection_invalidated:
                first = records[0] if records else due[0].record
                raise ConsumerError(
                    f"the batch from {first.topic}/{first.partition}@{first.offset} failed "
                    f"{self._failures} times in a row: {str(exc.orig)[:300]}"
                ) from exc
            self._parked = records + self._parked
            for inc in due:
                heapq.heappush(self._delayed, (self.clock(), next(self._seq), inc))
            self._stopping.wait(1.0)
            return
        self._failures = 0
        if out.deferred:
            self._run_deferred(out, started)
        self._apply(consumer, out)

    @staticmethod
    def _unreached(
        rest: list[tuple[Any, Incoming | None]], states: dict[tuple[str, str], store.InboxState]
    ) -> list[tuple[str, str]]:
        """Claimed rows of the messages a cut-short batch did not reach."""
        return [
            (j.name, inc.message_id)
            for _, inc in rest
            if inc is not None and inc.poison is None
            for j in inc.jobs
            if j.transactional and (j.name, inc.message_id) not in states
        ]

    def _waits(self, inc: Incoming, now: datetime, released: set[int]) -> bool:
        return inc.not_before is not None and inc.not_before > now and id(inc) not in released

    def _process(
        self,
        conn: Any,
        *,
        items: list[tuple[Any, Incoming | None]],
        states: dict[tuple[str, str], store.InboxState],
        released: set[int],
        now: datetime,
        started: float,
    ) -> _Outcome:
        out = _Outcome()
        budget_s = self.config.max_poll_interval_ms / 2000
        for index, (record, inc) in enumerate(items):
            if self._stopping.is_set() or self._replace or time.monotonic() - started > budget_s:
                out.rest = items[index:]
                out.released_rest = [i for _, i in out.rest if i is not None and id(i) in released]
                break
            tp = (record.topic, record.partition)
            if inc is None:
                out.ignored += 1
            elif inc.poison is not None:
                named = inc.jobs[0] if len(inc.jobs) == 1 else None
                record_failure(
                    conn,
                    self.group.group,
                    inc,
                    named,
                    reason=inc.poison.reason,
                    error=None,
                    message=str(inc.poison),
                    now=now,
                    shards=self.config.shards,
                )
                self._line(out, inc, named, "failed", 0.0, reason=inc.poison.reason)
            elif self._waits(inc, now, released):
                out.hold.append(inc)
            else:
                for declared in inc.jobs:
                    self._run(conn, inc=inc, declared=declared, states=states, out=out, now=now)
            if inc is not None and id(inc) in released:
                out.released.append(inc)
            else:
                out.advance[tp] = record.offset + 1
        return out

    def _run(
        self,
        conn: Any,
        *,
        inc: Incoming,
        declared: Job,
        states: dict[tuple[str, str], store.InboxState],
        out: _Outcome,
        now: datetime,
    ) -> None:
        if not declared.transactional:
            out.deferred.append((inc, declared))
            return
        key = (declared.name, inc.message_id)
        state = states.get(key)
        if state is not None and (state.status == store.DONE or state.attempts >= inc.attempt):
            self._line(out, inc, declared, "duplicate", 0.0)
            return
        ctx = self._context(JobContext, conn, inc, declared, now)
        self._rate_limit(declared)
        began = time.perf_counter()
        try:
            with self._limiter.limit(declared.timeout_s):
                declared.handler(inc.event, ctx)
            if self._follow_ups(inc):
                self._settled(ctx.connection, inc, declared, now)
            ctx.settle(True)
        except (JobTimeout, Exception) as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise  # the batch's transaction is gone: it is handled again as a whole
            ctx.settle(False)
            reason, message = self._classify(declared, exc)
            self._failed(
                conn,
                inc=inc,
                declared=declared,
                states=states,
                out=out,
                now=now,
                began=began,
                reason=reason,
                error=exc,
                message=message,
            )
            return
        states[key] = store.InboxState(store.DONE, inc.attempt)
        if state is not None:  # an earlier attempt's row: now done
            out.retried.append((declared.name, inc.message_id, inc.attempt))
        self._line(out, inc, declared, "processed", time.perf_counter() - began)

    def _context(
        self, make: Callable[..., JobContext], db: Any, inc: Incoming, declared: Job, now: datetime
    ) -> JobContext:
        return make(
            db,
            group=self.group.name,
            job=declared.name,
            event_id=inc.event_id,
            message_id=inc.message_id,
            key=_text(inc.record.key),
            attempt=inc.attempt,
            headers=inc.headers,
            now=now,
            bus=self.bus,
            dispatcher=self.dispatcher,
            config=self.job_config,
        )

    def _classify(self, declared: Job, exc: BaseException) -> tuple[str, str]:
        """A failed run's reason and message."""
        if isinstance(exc, JobTimeout):
            self._replace = True  # its process may hold a wedged resource: start afresh
            return "timeout", f"ran past its {declared.timeout_s:g} s timeout"
        return "rejected" if isinstance(exc, DoNotRetry) else "exception", str(exc)

    # -- transactional=False jobs, after the batch committed ------------------------------

    def _run_deferred(self, out: _Outcome, started: float) -> None:
        """Run the batch's deferred jobs in order; those not run now (stopping, out of time,
        or their outcome could not be recorded) are handled again, and the offsets stay
        below them."""
        budget_s = self.config.max_poll_interval_ms / 2000
        for index, (inc, declared) in enumerate(out.deferred):
            late = index > 0 and time.monotonic() - started > budget_s
            if self._stopping.is_set() or self._replace or late:
                self._requeue(out, out.deferred[index:])
                return
            try:
                self._run_outside(inc, declared, out)
            except DBAPIError as exc:
                log.warning(
                    "consumer_deferred_job_not_recorded",
                    group=self.group.name,
                    job=declared.name,
                    event_id=inc.event_id,
                    error=str(exc.orig)[:300],
                )
                self._requeue(out, out.deferred[index:])
                self._stopping.wait(1.0)
                return

    def _run_outside(self, inc: Incoming, declared: Job, out: _Outcome) -> None:
        """(1) the inbox says whether it ran; (2) run it with no transaction open; (3) record
        the outcome in a short transaction. A crash between (2) and (3) runs it again."""
        key = (declared.name, inc.message_id)
        with self.engine.connect() as conn:
            state = store.seen(conn, self.group.name, [key]).get(key)
        if state is not None and (state.status == store.DONE or state.attempts >= inc.attempt):
            self._line(out, inc, declared, "duplicate", 0.0)
            return
        now = self.clock()
        ctx = self._context(OwnTransactionsContext, self.engine, inc, declared, now)
        self._rate_limit(declared)
        began = time.perf_counter()
        error: BaseException | None = None
        try:
            with self._limiter.limit(declared.timeout_s):
                declared.handler(inc.event, ctx)
        except (JobTimeout, Exception) as exc:
            error = exc
        recorded = _Outcome()  # its log line counts only once the outcome has committed
        with self.engine.begin() as conn:
            earlier = store.claim(conn, self.group.name, {key: inc.attempt}, now).get(key)
            if error is not None:
                reason, message = self._classify(declared, error)
                self._failed(
                    conn,
                    inc=inc,
                    declared=declared,
                    states={},
                    out=recorded,
                    now=now,
                    began=began,
                    reason=reason,
                    error=error,
                    message=message,
                )
            else:
                if earlier is not None and earlier.status != store.DONE:
                    store.mark_done(conn, self.group.name, [(*key, inc.attempt)], now)
                if self._follow_ups(inc):
                    self._settled(conn, inc, declared, now)
                self._line(recorded, inc, declared, "processed", time.perf_counter() - began)
        out.lines += recorded.lines

    def _requeue(self, out: _Outcome, unrun: list[tuple[Incoming, Job]]) -> None:
        """Deferred jobs not run: their records are handled again (the batch's other jobs
        are duplicates then) and no offset is committed past them."""
        again: dict[int, Incoming] = {id(inc): inc for inc, _ in unrun}
        released = {id(inc) for inc in out.released}
        fetch_again: list[tuple[Any, Incoming | None]] = []
        for inc in again.values():
            if id(inc) in released:  # a retry from memory: it waits there again, still held
                heapq.heappush(self._delayed, (self.clock(), next(self._seq), inc))
            else:
                out.advance[inc.tp] = min(out.advance.get(inc.tp, inc.offset), inc.offset)
                fetch_again.append((inc.record, inc))
        out.released = [inc for inc in out.released if id(inc) not in again]
        # Ahead of the batch's unreached rest: each partition stays in offset order.
        out.rest = fetch_again + out.rest

    @staticmethod
    def _follow_ups(inc: Incoming) -> bool:
        return Headers.LOCK in inc.headers or Headers.BATCH in inc.headers

    def _failed(
        self,
        conn: Any,
        *,
        inc: Incoming,
        declared: Job,
        states: dict[tuple[str, str], store.InboxState],
        out: _Outcome,
        now: datetime,
        began: float,
        reason: str,
        error: BaseException,
        message: str,
    ) -> None:
        final = inc.attempt >= declared.tries or isinstance(error, DoNotRetry)
        status = store.FAILED if final else store.RETRYING
        states[(declared.name, inc.message_id)] = store.InboxState(status, inc.attempt)
        store.set_attempt(
            conn,
            self.group.name,
            job_name=declared.name,
            message_id=inc.message_id,
            status=status,
            attempts=inc.attempt,
            now=now,
        )
        if final:
            record_failure(
                conn,
                self.group.group,
                inc,
                declared,
                reason=reason,
                error=error,
                message=message or type(error).__name__,
                now=now,
                shards=self.config.shards,
            )
            self._settled(conn, inc, declared, now, failed=True)
            outcome = "failed"
        else:
            schedule_retry(
                conn,
                self.group.group,
                inc,
                declared,
                delay_s=declared.backoff(inc.attempt),
                now=now,
                shards=self.config.shards,
            )
            outcome = "retry_scheduled"
        self._line(
            out,
            inc,
            declared,
            outcome,
            time.perf_counter() - began,
            reason=reason,
            error=f"{type(error).__name__}: {message}"[:500],
        )

    def _settled(
        self, conn: Any, inc: Incoming, declared: Job, now: datetime, *, failed: bool = False
    ) -> None:
        """A unique job's lock is released, a batch member counted, follow-ups dispatched."""
        lock_key = inc.headers.get(Headers.LOCK)
        if lock_key:
            store.release_lock(conn, declared.name, lock_key, inc.event_id)
        batch_id = inc.headers.get(Headers.BATCH)
        if not batch_id:
            return
        progress = store.batch_progress(conn, batch_id, failed=failed, now=now)
        if progress is None:
            return
        follow_ups = []
        if failed and progress.failed == 1 and progress.catch_job:
            follow_ups.append(progress.catch_job)
        if progress.finished:
            if progress.failed == 0 and progress.then_job:
                follow_ups.append(progress.then_job)
            if progress.finally_job:
                follow_ups.append(progress.finally_job)
        summary = BatchFinished(
            batch_id=batch_id, name=progress.name, total=progress.total, failed=progress.failed
        )
        for name in follow_ups:
            self.dispatcher.dispatch(conn, name, summary, key=batch_id)

    def _rate_limit(self, declared: Job) -> None:
        """A token bucket per job and worker process: sleep until a token is free."""
        if not declared.rate_limit:
            return
        rate = declared.rate_limit
        tokens, at = self._tokens.get(declared.name, (rate, time.monotonic()))
        now = time.monotonic()
        tokens = min(rate, tokens + (now - at) * rate)
        if tokens < 1:
            time.sleep((1 - tokens) / rate)
            now = time.monotonic()
            tokens = 1.0
        self._tokens[declared.name] = (tokens - 1, now)

    def _line(
        self,
        out: _Outcome,
        inc: Incoming,
        declared: Job | None,
        outcome: str,
        seconds: float,
        **extra: Any,
    ) -> None:
        out.lines.append(
            {
                "job": declared.name if declared else None,
                "event_id": inc.event_id,
                "outcome": outcome,
                "attempt": inc.attempt,
                "duration_ms": round(seconds * 1000, 3),
                "topic": inc.record.topic,
                "partition": inc.record.partition,
                "offset": inc.record.offset,
                **extra,
            }
        )

    # -- after commit ------------------------------------------------------------------------

    def _apply(self, consumer: Any, out: _Outcome) -> None:
        for inc in out.hold:
            self._held.setdefault(inc.tp, set()).add(inc.offset)
            assert inc.not_before is not None  # noqa: S101 - only waiting records are held
            heapq.heappush(self._delayed, (inc.not_before, next(self._seq), inc))
        for inc in out.released:
            self._held.get(inc.tp, set()).discard(inc.offset)
        self._next.update(out.advance)
        if out.rest:
            # Not reached this time: released retries wait again, the rest is fetched again.
            back = {id(inc) for inc in out.released_rest}
            self._parked = [r for r, inc in out.rest if id(inc) not in back] + self._parked
            for inc in out.released_rest:
                heapq.heappush(self._delayed, (self.clock(), next(self._seq), inc))
        self._commit(consumer)
        self.stats.batches += 1
        self.stats.ignored += out.ignored
        counts: dict[tuple[str, str], int] = {}
        for line in out.lines:
            outcome = line["outcome"]
            key = (line["job"] or "-", outcome)
            counts[key] = counts.get(key, 0) + 1
            if outcome == "processed":
                self.stats.processed += 1
                self._timer(line["job"]).observe(line["duration_ms"] / 1000)
            elif outcome == "duplicate":
                self.stats.duplicates += 1
            elif outcome == "retry_scheduled":
                self.stats.retries += 1
            elif outcome == "failed":
                self.stats.failed += 1
            self._log.info("job_handled", **line)
        for (job_name, outcome), n in counts.items():
            self._counter(job_name, outcome).inc(n)

    def _counter(self, job_name: str, outcome: str) -> Any:
        key = (job_name, outcome)
        if key not in self._counters:
            self._counters[key] = self.metrics.handled.labels(self.group.name, *key)
        return self._counters[key]

    def _timer(self, job_name: str) -> Any:
        if job_name not in self._timers:
            self._timers[job_name] = self.metrics.duration.labels(self.group.name, job_name)
        return self._timers[job_name]

    def _commit(self, consumer: Any, *, final: bool = False) -> None:
        """Commit offsets up to what is durable (and below any retry held back).

        Asynchronously between batches: the database already holds the effects, so a lost
        commit costs a redelivery the inbox skips, and not waiting saves a broker round trip
        per batch. Synchronously, for every partition, when the worker stops.
        """
        offsets = {}
        for tp, upto in self._next.items():
            held = self._held.get(tp)
            offset = min(*held, upto) if held else upto
            if final or self._committed.get(tp) != offset:
                offsets[TopicPartition(*tp)] = OffsetAndMetadata(offset, "", -1)
        if not offsets:
            return
        for tp, meta in offsets.items():
            self._committed[(tp.topic, tp.partition)] = meta.offset
        if not final:
            consumer.commit_async(offsets, callback=self._committed_async)
            return
        try:
            consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced under us: the new owner redelivers, the inbox skips.
            log.warning("consumer_commit_rejected_after_rebalance", group=self.group.name)
        except KafkaError as exc:
            log.warning("consumer_commit_failed", group=self.group.name, error=str(exc))

    def _committed_async(self, offsets: dict[Any, Any], response: Any) -> None:
        if not isinstance(response, Exception):
            return
        log.warning("consumer_commit_failed", group=self.group.name, error=str(response))
        for tp, meta in offsets.items():  # send these again with the next batch
            if self._committed.get((tp.topic, tp.partition)) == meta.offset:
                self._committed.pop((tp.topic, tp.partition), None)

    def _refresh_metrics(self, consumer: Any) -> None:
        interval = self.config.metrics_interval_s
        if interval is None or time.monotonic() - self._last_metrics < interval:
            return
        self._last_metrics = time.monotonic()
        for tp in consumer.assignment():
            high_water = consumer.highwater(tp)
            if high_water is None:
                continue
            lag = max(0, high_water - consumer.position(tp))
            self.metrics.lag.labels(self.group.name, tp.topic, str(tp.partition)).set(lag)
        try:
            with self.engine.connect() as conn:
                count = count_failed(conn, FailedFilter(group=self.group.name))
            self.metrics.failed_jobs.labels(self.group.name).set(count)
        except DBAPIError:
            pass  # a gauge can wait for the next refresh; the batches report real trouble


def _unstick_resumed_partitions(consumer: Any) -> None:
    """Work around kafka-python 3.0.12 (KAFKA-7548 port, dpkp/kafka-python#2981): records a
    paused partition had buffered are parked and only restored while the fetcher's current
    PartitionRecords is None; a drained one is left in place (falsy, not None), so a resumed
    partition's parked records never come back and the partition is never fetched again.
    Seen here as a lane's partition stopping for good after pause/resume. Resetting the
    drained slot lets the next poll restore them. Harmless where the bug is fixed."""
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if getattr(fetcher, "_paused_partition_records", None) and current is not None and not current:
        fetcher._next_partition_records = None  # type: ignore[union-attr]


def _text(key: bytes | None) -> str:
    return key.decode("utf-8", "replace") if key else ""
