"""One attempt of one job on one message: the only place a handler is called.

The same path runs a transactional job inside its batch's transaction and a
`transactional=False` job after its batch committed; only the *scope* differs, i.e. where
"did this already run?" is answered and where the outcome is recorded:

* `BatchScope`: the batch claimed every (job, message) inbox row up front; the job writes
  through a savepoint of its own on the batch's connection; its outcome is recorded there.
* `OwnScope`: the inbox is read first; the job runs with no transaction open; its outcome
  (inbox row, retry or failed record, and the effects the job left for it with
  `ctx.when_recorded`) is written in a short transaction of its own, or together with the
  outcomes of the attempts that ran just before it (`record_round`,
  consumers._internal.after_commit).

A job whose time ran out inside a database call leaves its batch's connection invalidated
(JobTimeout is a BaseException, so SQLAlchemy cannot trust the connection any more): the
batch is lost, and `BatchLost` carries the attempt out so that the worker records it on a
fresh connection (`OwnScope.recording`) before it is replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from consumers import store
from consumers.attempt_record import Attempt, Line
from consumers.context import JobContext, JobTimeout, OwnTransactionsContext
from consumers.errors import permanent
from consumers.headers import Headers
from consumers.heartbeat import Activity
from consumers.incoming import Incoming
from consumers.job import Job
from consumers.middleware import Middleware
from domain.bus import CommandBus
from domain.events import DomainEvent

__all__ = ["AttemptPath", "BatchLost", "BatchScope", "OwnScope", "line"]


class BatchLost(BaseException):
    """The batch's connection died under a timed-out job: record `attempt` elsewhere."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.job.name)
        self.attempt = attempt


def line(inc: Incoming, job: Job | None, outcome: str, seconds: float, **extra: Any) -> Line:
    record = inc.record
    return {
        "job": job.name if job else None,
        "event_id": inc.event_id,
        "outcome": outcome,
        "attempt": inc.attempt,
        "duration_ms": round(seconds * 1000, 3),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        **extra,
    }


class Scope(Protocol):
    def seen(self, attempt: Attempt) -> bool: ...
    def context(self, make: Callable[..., JobContext], attempt: Attempt) -> JobContext: ...
    def lost(self) -> bool: ...
    def recording(self, attempt: Attempt) -> Any: ...  # a context manager yielding a Connection
    def recorded(self, attempt: Attempt, conn: Connection) -> None: ...


class BatchScope:
    def __init__(
        self,
        conn: Connection,
        group: str,
        states: dict[tuple[str, str], store.InboxState],
    ) -> None:
        self.conn = conn
        self.group = group
        self.states = states
        self.retried: list[tuple[str, str, int]] = []

    def seen(self, attempt: Attempt) -> bool:
        state = self.states.get(attempt.key)
        return state is not None and state.covers(attempt.incoming.attempt)

    def context(self, make: Callable[..., JobContext], attempt: Attempt) -> JobContext:
        return make(self.conn)

    def lost(self) -> bool:
        return self.conn.invalidated

    @contextmanager
    def recording(self, attempt: Attempt) -> Iterator[Connection]:
        yield self.conn

    def recorded(self, attempt: Attempt, conn: Connection) -> None:
        key, number = attempt.key, attempt.incoming.attempt
        digest = attempt.incoming.digest
        if attempt.error is None:
            if key in self.states:  # an earlier attempt's row: now done
                self.retried.append((*key, number))
            self.states[key] = store.InboxState(store.InboxStatus.DONE, number, digest)
        else:
            status = store.InboxStatus.FAILED if attempt.final else store.InboxStatus.RETRYING
            self.states[key] = store.InboxState(status, number, digest)


class OwnScope:
    def __init__(self, engine: Engine, group: str) -> None:
        self.engine = engine
        self.group = group
        self._known: dict[tuple[str, str], store.InboxState] = {}
        self._read: set[tuple[str, str]] = set()

    def prefetch(self, keys: list[tuple[str, str]]) -> None:
        """Read the inbox rows of these (job, message id) pairs in one query up front,
        instead of one query per attempt."""
        with self.engine.connect() as conn:
            self._known.update(store.seen(conn, self.group, keys))
        self._read.update(keys)

    def seen(self, attempt: Attempt) -> bool:
        key = attempt.key
        if key in self._read:
            state = self._known.get(key)
        else:
            with self.engine.connect() as conn:
                state = store.seen(conn, self.group, [key]).get(key)
        if state is not None and state.covers(attempt.incoming.attempt):
            return True
        # Run now: the same message again in this batch (a redelivery) is a duplicate.
        self._known[key] = store.InboxState(store.InboxStatus.DONE, attempt.incoming.attempt)
        self._read.add(key)
        return False

    def context(self, make: Callable[..., JobContext], attempt: Attempt) -> JobContext:
        return OwnTransactionsContext(self.engine, **_details(make))

    def lost(self) -> bool:
        return False

    @contextmanager
    def recording(self, attempt: Attempt) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            earlier = store.claim(
                conn,
                self.group,
                {attempt.key: attempt.incoming.attempt},
                attempt.now,
                tenants=_tenants([attempt]),
            ).get(attempt.key)
            attempt.earlier = earlier
            yield conn

    @contextmanager
    def recording_round(self, attempts: list[Attempt]) -> Iterator[Connection]:
        """One transaction for the outcomes of several attempts (their inbox rows claimed in
        one statement)."""
        with self.engine.begin() as conn:
            pairs = {a.key: a.incoming.attempt for a in attempts}
            earlier = store.claim(
                conn, self.group, pairs, attempts[0].now, tenants=_tenants(attempts)
            )
            for attempt in attempts:
                attempt.earlier = earlier.get(attempt.key)
            yield conn

    def recorded(self, attempt: Attempt, conn: Connection) -> None:
        earlier = attempt.earlier
        if (
            attempt.error is None
            and earlier is not None
            and earlier.status != store.InboxStatus.DONE
        ):
            store.mark_done(
                conn, self.group, [(*attempt.key, attempt.incoming.attempt)], attempt.now
            )


def _tenants(attempts: list[Attempt]) -> dict[str, str]:
    return store.tenants_by_message((a.incoming.message_id, a.incoming.headers) for a in attempts)


def _apply_effects(conn: Connection, attempts: list[Attempt]) -> None:
    """The attempts' `ctx.when_recorded` items, one `apply` call per function."""
    by_apply: dict[Any, list[Any]] = {}
    for attempt in attempts:
        if attempt.ctx is not None:
            for apply, item in attempt.ctx.effects():
                by_apply.setdefault(apply, []).append(item)
    for apply, items in by_apply.items():
        apply(conn, items)


def _details(make: Callable[..., JobContext]) -> dict[str, Any]:
    details = getattr(make, "keywords", None)
    assert details is not None  # noqa: S101 - AttemptPath passes a functools.partial
    return dict(details)


def _overrides(stack: tuple[Middleware, ...], hook: str) -> list[Any]:
    """The bound hooks that do something (a no-op hook costs a call per message)."""
    return [
        getattr(m, hook) for m in stack if getattr(type(m), hook) is not getattr(Middleware, hook)
    ]


class AttemptPath:
    def __init__(
        self,
        stack: tuple[Middleware, ...],
        *,
        group: str,
        bus: CommandBus,
        dispatcher: Any,
        job_config: object,
        activity: Activity | None = None,
    ) -> None:
        self.stack = stack
        self.activity = activity or Activity()
        self._group = group
        self._bus = bus
        self._dispatcher = dispatcher
        self._config = job_config
        self._before = _overrides(stack, "before")
        self._start = _overrides(stack, "start")
        self._finish = _overrides(stack, "finish")[::-1]
        self._classify = _overrides(stack, "classify")
        self._succeeded = _overrides(stack, "succeeded")
        self._failed = _overrides(stack, "failed")
        self._settled = _overrides(stack, "settled")
        self._round = _overrides(stack, "round")

    def run(
        self,
        scope: Scope,
        inc: Incoming,
        declared: Job,
        now: datetime,
        *,
        record: bool = True,
        upcoming: tuple[DomainEvent, ...] = (),
    ) -> Attempt:
        """One attempt, recorded unless `record=False` (then the caller records it, with
        `record` or `record_round`; a duplicate comes back with its line set, not run).
        `upcoming`: the events after it that it may prepare for (option `lookahead`)."""
        attempt = Attempt(inc, declared, now)
        if scope.seen(attempt):
            attempt.line = line(inc, declared, "duplicate", 0.0)
            return attempt
        ctx = attempt.ctx = scope.context(self._maker(inc, declared, now), attempt)
        ctx.upcoming = upcoming
        for hook in self._before:
            hook(attempt)
        attempt.began = time.perf_counter()
        try:
            for hook in self._start:
                hook(attempt)
            self.activity.begin(declared.name, inc.message_id, inc.key, now)
            try:
                declared.handler(inc.event, ctx)
            finally:
                self.activity.end()
                for hook in self._finish:
                    hook(attempt)
                attempt.ended = time.perf_counter()
        except (JobTimeout, Exception) as exc:
            attempt.error = exc
            if scope.lost():
                if isinstance(exc, JobTimeout):
                    raise BatchLost(attempt) from None
                raise  # the batch's connection is gone: the batch is handled again
        ctx.settle(attempt.error is None)
        if record:
            self.record(scope, attempt)
        return attempt

    def record(self, scope: Scope, attempt: Attempt) -> None:
        """Record the attempt's outcome (and its follow-ups) in the scope's transaction."""
        with scope.recording(attempt) as conn:
            _apply_effects(conn, [attempt])
            self._record_on(conn, scope, attempt)

    def record_round(self, scope: OwnScope, attempts: list[Attempt]) -> None:
        """Record the outcomes of several attempts that ran outside a transaction in one
        transaction: all of them, or (raising) none."""
        with scope.recording_round(attempts) as conn, ExitStack() as rounds:
            _apply_effects(conn, attempts)
            for hook in self._round:
                rounds.enter_context(hook(conn))
            for attempt in attempts:
                self._record_on(conn, scope, attempt)

    def _record_on(self, conn: Connection, scope: Scope, attempt: Attempt) -> None:
        inc, declared = attempt.incoming, attempt.job
        took = (attempt.ended or time.perf_counter()) - attempt.began
        attempt.line = None
        if attempt.error is None:
            for hook in self._succeeded:
                hook(attempt, conn)
            if Headers.LOCK in inc.headers or Headers.BATCH in inc.headers:
                for hook in self._settled:
                    hook(attempt, conn, failed=False)
            scope.recorded(attempt, conn)
            attempt.line = line(inc, declared, "processed", took)
            return
        error = attempt.error
        attempt.reason, attempt.message = self._reason(attempt, error)
        for hook in self._failed:
            hook(attempt, conn)
        if attempt.final:
            for hook in self._settled:
                hook(attempt, conn, failed=True)
        scope.recorded(attempt, conn)
        attempt.line = line(
            inc,
            declared,
            "failed" if attempt.final else "retry_scheduled",
            took,
            reason=attempt.reason,
            error=f"{type(error).__name__}: {attempt.message}"[:500],
        )

    def _reason(self, attempt: Attempt, error: BaseException) -> tuple[str, str]:
        """The failure's reason and message; a permanent one (consumers.errors.permanent,
        the one place that sorts failures) is marked so, and not retried."""
        for hook in self._classify:
            found: tuple[str, str] | None = hook(attempt, error)
            if found is not None:
                return found
        verdict = permanent(error)  # DoNotRetry with its own reason (record_mismatch) too
        if verdict is not None:
            attempt.permanent = True
            return verdict
        return "exception", str(error)

    def _maker(self, inc: Incoming, declared: Job, now: datetime) -> Callable[..., JobContext]:
        return partial(
            JobContext,
            group=self._group,
            job=declared.name,
            event_id=inc.event_id,
            message_id=inc.message_id,
            key=inc.key,
            attempt=inc.attempt,
            headers=inc.headers,
            now=now,
            bus=self._bus,
            dispatcher=self._dispatcher,
            config=self._config,
        )
