"""The consumer worker: the loop and its lifecycle.

Each turn of the loop: poll the source (priority lanes decide what is paused and what is
handed out, consumers._internal.lanes), take the delayed retries that are due
(consumers._internal.held_retries), run the batch in one transaction
(consumers._internal.poll_batch; a long one holds its partitions meanwhile,
consumers._internal.keepalive), run its `transactional=False` jobs after it committed,
then move the offsets (consumers._internal.offsets: never past a record whose outcome is not
durable or that waits for its retry time) and commit them. Every few seconds the worker asks
itself whether it is doing its job (consumers._internal.liveness); if not, it leaves the
group and exits to be replaced.

The database refusing a batch is either transient (a lost connection, a deadlock: the batch
is fetched again after a pause that doubles up to 30 s) or about a record (a value it cannot
store: the batch runs again one record per transaction, and the refused record is
dead-lettered as bytes). Neither ends the worker: a group never stalls on a record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, StatementError

from consumers._internal.after_commit import run_deferred
from consumers._internal.attempt_path import AttemptPath, OwnScope
from consumers._internal.backends import check_migrated, not_migrated
from consumers._internal.held_retries import DelayedRetries
from consumers._internal.keepalive import KeepAlive
from consumers._internal.lanes import Lanes
from consumers._internal.liveness import Liveness, Stalled, process_exit
from consumers._internal.offsets import OffsetTracker
from consumers._internal.poll_batch import BatchRunner, Item, Outcome
from consumers.config import WorkerConfig, WorkerStats
from consumers.dispatch import Dispatcher
from consumers.errors import WorkerBrokerUnavailable
from consumers.failed_jobs import FailedFilter, count_failed
from consumers.groups import BoundGroup
from consumers.heartbeat import Activity, HeartbeatWriter
from consumers.incoming import Incoming, read
from consumers.metrics import ConsumerMetrics
from consumers.middleware import Line, MiddlewareEnv, build_stack
from consumers.source import Source, SourceUnavailable, TopicPartition
from consumers.source_choice import kafka_source
from domain.bus import CommandBus
from domain.events import EventRegistry, registry
from outbox.schema import is_missing_schema, is_transient
from outbox.types import utcnow

__all__ = ["Worker", "WorkerConfig", "WorkerStats"]

log = structlog.get_logger("consumers.runtime")


class Worker:
    def __init__(
        self,
        engine: Engine,
        group: BoundGroup,
        config: WorkerConfig,
        *,
        bus: CommandBus,
        dispatcher: Dispatcher,
        job_config: object = None,
        events: EventRegistry = registry,
        metrics: ConsumerMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        source: Callable[[], Source] | None = None,
        job_log: Callable[[str, Sequence[Line]], None] | None = None,
    ) -> None:
        """`job_log(group, lines)` writes a batch's `job_handled` lines (default: one
        structlog call per line; the CLI passes a writer that renders a batch at once)."""
        self.engine = engine
        self.group = group
        self.config = config
        self.events = events
        self.metrics = metrics or ConsumerMetrics()
        self.clock = clock
        self.stats = WorkerStats()
        self._make_source = source or self._kafka_source
        self._source: Source | None = None  # while running and not yet closing
        self._stopping = threading.Event()
        self._exit_reason: str | None = None
        self._stalled: Stalled | None = None
        self._failures = 0
        self._last_metrics = 0.0
        self._last_check = time.monotonic()
        self.stack = build_stack(MiddlewareEnv(group, dispatcher, self.metrics, config.shards))
        self.activity = Activity()
        self.heartbeat = (
            HeartbeatWriter(engine, group.name, self.activity, interval_s=config.heartbeat_s)
            if config.heartbeat_s
            else None
        )
        self.path = AttemptPath(
            self.stack,
            group=group.name,
            bus=bus,
            dispatcher=dispatcher,
            job_config=job_config,
            activity=self.activity,
        )
        self.batches = BatchRunner(
            engine,
            group,
            self.path,
            shards=config.shards,
            budget_s=config.max_poll_interval_ms / 2000,
            stopping=self._stopping.is_set,
        )
        self.offsets = OffsetTracker(time.time)
        self.keepalive = KeepAlive(group.name, max_poll_interval_ms=config.max_poll_interval_ms)
        self.delayed: DelayedRetries[Incoming] = DelayedRetries()
        self.lanes = Lanes(
            lambda topic: group.group.lane(topic) == "high",
            retry_topic=group.group.retry_topic,
            max_records=config.max_poll_records,
        )
        self.liveness = Liveness(
            group.name,
            config.liveness_timeout_s,
            loop_grace_s=config.max_poll_interval_ms / 1000 + 30,
            hard_exit=process_exit if config.exit_when_blocked else None,
        )
        self._committed_hooks = [m.committed for m in self.stack]
        self._job_log = job_log
        self._log: Any = log

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the message in flight, commit, leave the group."""
        self._stopping.set()

    def run(self) -> WorkerStats:
        # A logger bound once (structlog resolves its lazy proxy on every call otherwise).
        self._log = log.bind(group=self.group.name)
        check_migrated(self.engine)  # at start, not at the first message
        source = self._source = self._make_source()
        source.subscribe(self.group.group.subscriptions(), self)
        self.liveness.start_watch()
        if self.heartbeat is not None:
            self.heartbeat.start()
        try:
            while not self._stopping.is_set() and self._exit_reason is None:
                self.liveness.looped()
                records = self._poll(source)
                due = self.delayed.pop_due(self.clock(), 500)
                if records or due:
                    self._handle(source, records, due)
                self._check_liveness(source)
                self._refresh_metrics(source)
        finally:
            self.liveness.stop_watch()
            if self.heartbeat is not None:
                self.heartbeat.stop()
            self._commit(source, final=True)
            self._source = None  # the final commit covered every partition
            source.close()  # leaves the group at once
            if self._stalled is not None and self._stalled.reform:
                outcome = source.reform_group(stuck_members=self._stalled.reform == "stuck")
                log.warning("consumer_group_reform", group=self.group.name, outcome=outcome)
        self.stats.exit_reason = self._exit_reason or "stopped"
        log.info("consumer_stopped", group=self.group.name, reason=self.stats.exit_reason)
        return self.stats

    def _kafka_source(self) -> Source:
        try:
            return kafka_source(self.config, self.group.name)
        except SourceUnavailable as exc:
            raise WorkerBrokerUnavailable(str(exc)) from exc

    # -- the source's rebalance listener ----------------------------------------------------

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Another worker owns these now, or this one again after the rebalance: either way
        the owner starts from the committed offsets (the source port's promise), so what
        was fetched and not committed (parked, held back) is fetched again. What is durable
        of them is committed first, inside the source's revocation (bounded)."""
        self._commit_durable(partitions)
        self._let_go(partitions)

    def _commit_durable(self, partitions: set[TopicPartition]) -> None:
        source = self._source if self._source and self._source.commits_on_revocation else None
        due = self.offsets.due_of(partitions) if source is not None else None
        if source is not None and due and not source.commit(due):
            log.info("consumer_revoked_commit_rejected", group=self.group.name)

    def _let_go(self, partitions: set[TopicPartition]) -> None:
        self.delayed.drop(partitions)
        self.lanes.revoked(partitions)
        self.offsets.forget(partitions)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.lanes.assigned()
        self.liveness.assignment(len(partitions))
        self.metrics.assigned.labels(self.group.name).set(len(partitions))
        log.info(
            "consumer_assigned",
            group=self.group.name,
            partitions=sorted(f"{t}/{p}" for t, p in partitions),
        )

    # -- polling ---------------------------------------------------------------------------

    def _poll(self, source: Source) -> list[Any]:
        assigned = source.assignment()
        wanted = self.lanes.wanted_paused(
            assigned, retries_full=len(self.delayed) >= self.config.delayed_cap
        )
        now_paused = source.paused()
        source.pause(wanted - now_paused)
        source.resume(now_paused - wanted)
        timeout = self.lanes.timeout_ms(self.config.poll_timeout_ms)
        next_due = self.delayed.next_due()
        if next_due is not None:
            wait = (next_due - self.clock()).total_seconds() * 1000
            timeout = int(max(0, min(timeout, wait)))
        polled = source.poll(timeout, self.config.max_poll_records)
        return self.lanes.select(polled, source.assignment())

    # -- one batch -------------------------------------------------------------------------

    def _handle(self, source: Source, records: list[Any], due: list[Incoming]) -> None:
        """One batch; a long one holds its partitions meanwhile (consumers._internal.keepalive):
        what the source said then is heard here, after the batch, before its outcome."""
        with self.keepalive.during(source, self._commit_durable) as guard:
            out = self._run(records, due)
        if guard.stuck:  # the source is still in a call on the holding thread
            self._exit_reason = "stalled"
            return
        if guard.gone:
            self._let_go(guard.gone)
            out = out.without(guard.gone) if out is not None else None
        if guard.assignment is not None:
            self.assigned(guard.assignment)
        if out is not None:
            self._apply(source, out)

    def _run(self, records: list[Any], due: list[Incoming]) -> Outcome | None:
        now = self.clock()
        c = self.config
        items: list[Item] = [
            (r, read(r, self.group, self.events, max_payload_bytes=c.max_payload_bytes, now=now))
            for r in records
        ]
        items += [(inc.record, inc) for inc in due]
        released = {id(inc) for inc in due}
        started = time.monotonic()
        try:
            out = self.batches.run(items, released, now)
        except StatementError as exc:
            if isinstance(exc, DBAPIError) and is_missing_schema(exc):
                raise not_migrated(exc) from exc
            if is_transient(exc):
                self._rolled_back(exc, records, due)
                return None
            self._log.warning(
                "consumer_batch_isolating",
                error=str(getattr(exc, "orig", exc))[:300],
                messages=len(items),
            )
            out = self.batches.run_isolated(items, released, now)
        self._failures = 0
        if out.deferred:
            run_deferred(
                self.path,
                OwnScope(self.engine, self.group.name),
                out,
                started=started,
                budget_s=self.config.max_poll_interval_ms / 2000,
                stopping=self._stopping,
                delayed=self.delayed,
                clock=self.clock,
            )
        if out.replace:
            self._exit_reason = "replace"  # its process may hold a wedged resource
        return out

    def _rolled_back(self, exc: StatementError, records: list[Any], due: list[Incoming]) -> None:
        """Nothing of the batch committed: fetch it again after a pause."""
        self._failures += 1
        pause = min(30.0, 0.5 * 2 ** min(self._failures, 10))
        self._log.warning(
            "consumer_batch_rolled_back",
            error=str(getattr(exc, "orig", exc))[:300],
            messages=len(records) + len(due),
            retry_in_s=pause,
        )
        self.lanes.put_back(records)
        for inc in due:
            self.delayed.push(self.clock(), inc)
        self._stopping.wait(pause)

    # -- after commit ------------------------------------------------------------------------

    def _apply(self, source: Source, out: Outcome) -> None:
        for inc in out.hold:
            self.offsets.hold(inc.tp, inc.offset)
            assert inc.not_before is not None  # noqa: S101 - only waiting records are held
            self.delayed.push(inc.not_before, inc)
        for inc in out.released:
            self.offsets.release(inc.tp, inc.offset)
        for tp, next_offset in out.advance.items():
            self.offsets.advance(tp, next_offset)
        if out.rest:
            # Not reached this time: released retries wait again, the rest is fetched again.
            back = {id(inc) for inc in out.released_rest}
            self.lanes.put_back([r for r, inc in out.rest if id(inc) not in back])
            for inc in out.released_rest:
                self.delayed.push(self.clock(), inc)
        self._commit(source)
        if out.advance or out.lines or out.released:
            self.liveness.progressed()
        self._report(out)

    def _report(self, out: Outcome) -> None:
        """Count, log and measure a batch whose outcome is durable."""
        self.stats.count(out.lines, ignored=out.ignored)
        self.activity.completed(out.lines, self.clock())
        if self._job_log is not None:
            self._job_log(self.group.name, out.lines)
        else:
            info = self._log.info
            for line in out.lines:
                info("job_handled", **line)
        for hook in self._committed_hooks:
            hook(out.lines)

    def _commit(self, source: Source, *, final: bool = False) -> None:
        """Commit offsets up to what is durable (and below any retry held back).

        Asynchronously between batches: the database already holds the effects, so a lost
        commit costs a redelivery the inbox skips, and not waiting saves a broker round trip
        per batch. Synchronously, for every partition, when the worker stops.
        """
        offsets = self.offsets.due(everything=final)
        if not offsets:
            return
        self.offsets.sent(offsets)
        if not final:
            source.commit_async(offsets, self._committed_async)
        elif not source.commit(offsets):
            # The group rebalanced under us: the new owner redelivers, the inbox skips.
            log.warning("consumer_commit_rejected_after_rebalance", group=self.group.name)

    def _committed_async(self, offsets: Any, error: Exception | None) -> None:
        if error is None:
            return
        log.warning("consumer_commit_failed", group=self.group.name, error=str(error))
        self.offsets.rejected(offsets)  # send these again with the next batch

    # -- watching itself ---------------------------------------------------------------------

    def _check_liveness(self, source: Source) -> None:
        now = time.monotonic()
        if now - self._last_check < self.config.liveness_check_s:
            return
        self._last_check = now
        self.liveness.assignment(len(source.assignment()))
        self.liveness.rebalancing(source.rebalancing())
        lag = sum(source.lag().values()) + len(self.lanes.parked)
        stalled = self.liveness.check(lag, source.group_state)
        if stalled is None:
            return
        self.metrics.stalled.labels(self.group.name, stalled.reason).inc()
        log.error(
            "consumer_stalled",
            group=self.group.name,
            reason=stalled.reason,
            detail=stalled.detail,
            action="leaving the group and exiting to be replaced"
            + (f" (re-forming the group: {stalled.reform})" if stalled.reform else ""),
        )
        self._exit_reason = "stalled"
        self._stalled = stalled

    def _refresh_metrics(self, source: Source) -> None:
        interval = self.config.metrics_interval_s
        if interval is None or time.monotonic() - self._last_metrics < interval:
            return
        self._last_metrics = time.monotonic()
        for (topic, partition), lag in source.lag().items():
            self.metrics.lag.labels(self.group.name, topic, str(partition)).set(lag)
        try:
            with self.engine.connect() as conn:
                count = count_failed(conn, FailedFilter(group=self.group.name))
            self.metrics.failed_jobs.labels(self.group.name).set(count)
        except DBAPIError:
            pass  # a gauge can wait for the next refresh; the batches report real trouble
