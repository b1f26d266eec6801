"""What a job handler may use: its message's ids, the transaction (through a savepoint of its
own), domain commands and dispatch. And the time limit the runtime puts around it."""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any, Generic, cast

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import NestedTransaction
from typing_extensions import TypeVar

from consumers import retry_tickets
from consumers.errors import JobTimeout, NoBatchTransaction
from domain.bus import CommandBus, CommandResult
from domain.commands import Command
from domain.events import DomainEvent
from domain.unit_of_work import CommandContext

if TYPE_CHECKING:
    from consumers.dispatch import Dispatcher

__all__ = [
    "JobContext",
    "JobTimeout",
    "OwnTransactionsContext",
    "TimeLimiter",
    "time_limit",
]


Effect = Callable[[Connection, list[Any]], None]
"""`apply(conn, items)`: writes the items that attempts left with `ctx.when_recorded`."""


# The application's own job configuration (jobs.config.AppConfig in this project's
# application; a CONSUMER_MODULES application may bring its own): the runtime passes it
# through as `ctx.config` and never reads it.
C = TypeVar("C", default=Any)


class JobContext(Generic[C]):
    """One job run. Database work goes through `connection`, which opens a savepoint on first
    use: a failing job's writes are undone without undoing its batch neighbours'."""

    def __init__(
        self,
        conn: Connection,
        *,
        group: str,
        job: str,
        event_id: str,
        message_id: str,
        key: str,
        attempt: int,
        headers: dict[str, str],
        now: datetime,
        bus: CommandBus,
        dispatcher: Dispatcher,
        config: C,
    ) -> None:
        self._conn = conn
        self._savepoint: NestedTransaction | None = None
        self.group = group
        self.job = job
        self.event_id = event_id
        self.message_id = message_id
        self.key = key  # the Kafka key: the aggregate id for domain events
        self.attempt = attempt
        self.headers = headers
        self.now = now
        self.config = config
        self._bus = bus
        self._dispatcher = dispatcher
        self._staged: list[tuple[Any, Any]] = []
        # The same job's messages after this one that this worker runs next without a stop
        # in between (option `lookahead`, transactional=False jobs): prepare them in bulk.
        self.upcoming: tuple[DomainEvent, ...] = ()
        self._retried: tuple[int | None] | None = None

    @property
    def log(self) -> Any:
        """A logger bound to this job and event (built on first use: most jobs never log)."""
        return structlog.get_logger("consumers.job").bind(job=self.job, event_id=self.event_id)

    @property
    def tenant_id(self) -> str | None:
        return self.headers.get("tenant_id")

    @property
    def occurred_at(self) -> datetime:
        """When the event happened (its CloudEvents time), else when this job runs."""
        value = self.headers.get("ce_time")
        if value:
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        return self.now

    def retried_failed_id(self, conn: Connection) -> int | None:
        """The failed job an operator's `outbox failed retry` sent this message again for,
        as the database knows it (never the raw header), else None; its ticket is honoured
        once, in `conn`'s transaction (consumers.retry_tickets)."""
        if self._retried is None:
            who = (self.group, self.job, self.event_id)
            self._retried = (retry_tickets.honour(conn, who, self.headers, self.now),)
        return self._retried[0]

    @property
    def connection(self) -> Connection:
        if self._savepoint is None:
            self._savepoint = self._conn.begin_nested()
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The job's database work; here the batch's transaction (through the savepoint), in
        a `transactional=False` job a short transaction of its own. A job written with it
        runs either way."""
        yield self.connection

    def run(self, command: Command) -> CommandResult:
        """Run a domain command in this job's transaction; its events carry this message as
        their cause and its correlation id."""
        return self._bus.run_in(self.connection, command, self._command_context(command))

    def run_in(self, conn: Connection, command: Command) -> CommandResult:
        """Run a domain command on a connection from `transaction()`, committing with
        whatever else the job writes there."""
        return self._bus.run_in(conn, command, self._command_context(command))

    def dispatch(
        self,
        job_name: str,
        message: DomainEvent,
        *,
        key: str | None = None,
        delay: timedelta | None = None,
    ) -> str | None:
        """Queue another job when this one commits, due at once or `delay` later (None: a
        unique job's lock holds). A bad delay raises InvalidDelay before anything is written."""
        return self._dispatch_in(self.connection, job_name, message, key, delay)

    def _command_context(self, command: Command) -> CommandContext:
        return CommandContext(
            correlation_id=self.headers.get("correlation_id") or self.event_id,
            causation_id=self.event_id,
            tenant_id=getattr(command, "tenant_id", None) or self.tenant_id,
            actor=f"job:{self.job}",
        )

    def _dispatch_in(
        self,
        conn: Connection,
        job_name: str,
        message: DomainEvent,
        key: str | None,
        delay: timedelta | None,
    ) -> str | None:
        return self._dispatcher.dispatch(
            conn,
            job_name,
            message,
            key=key,
            headers={"correlation_id": self.headers.get("correlation_id") or self.event_id},
            delay=delay,
        )

    @property
    def dispatcher(self) -> Dispatcher:
        """For a fan-out in chunks of its own transactions (`open_batch`, `add_to_batch`)."""
        return self._dispatcher

    def add_to_batch(self, key: Any, value: Any) -> None:
        """Stage an effect for the job's `apply_batch`, applied once per batch in key order
        just before the batch commits (dropped if this attempt fails)."""
        self._staged.append((key, value))

    def staged(self) -> list[tuple[Any, Any]]:
        return self._staged

    def when_recorded(self, apply: Effect, item: Any) -> None:
        """Only for `transactional=False` jobs (see OwnTransactionsContext.when_recorded)."""
        raise TypeError(
            f"job {self.job!r} runs in its batch's transaction: write through ctx.connection"
        )

    def effects(self) -> list[tuple[Effect, Any]]:
        """What `when_recorded` left for the runtime to apply (none in a batch's job)."""
        return []

    def settle(self, ok: bool) -> None:
        """Keep (release) or undo (roll back to) the savepoint, if the job opened one."""
        if self._savepoint is not None and self._savepoint.is_active:
            if ok:
                self._savepoint.commit()
            else:
                self._savepoint.rollback()
        self._savepoint = None


class OwnTransactionsContext(JobContext[C]):
    """The context of a `transactional=False` job: it runs after its batch committed, with no
    transaction open, and each `transaction()`, `run` and `dispatch` commits on its own."""

    def __init__(self, engine: Engine, **details: Any) -> None:
        # No batch connection: `connection` is overridden and never reads it.
        super().__init__(cast(Connection, None), **details)
        self._engine = engine
        self._effects: list[tuple[Effect, Any]] = []

    def when_recorded(self, apply: Effect, item: Any) -> None:
        """Call `apply(conn, items)` in the transaction that records this attempt's outcome
        (its inbox row, or its retry or failed record), whether it succeeded or failed,
        once for the items of all the attempts recorded together (a round, see
        consumers._internal.after_commit): the job's "what happened" commits with the
        runtime's, in one
        statement and one commit for many messages. Until it commits it is not durable: a
        crash before runs the job again."""
        self._effects.append((apply, item))

    def effects(self) -> list[tuple[Effect, Any]]:
        return self._effects

    @property
    def engine(self) -> Engine:
        """For work in many short transactions of its own (prune)."""
        return self._engine

    @property
    def connection(self) -> Connection:
        raise NoBatchTransaction(
            f"job {self.job!r} is declared transactional=False and runs outside its batch's "
            "transaction, so it has no ctx.connection: open a short transaction of its own "
            "with `with ctx.transaction() as conn:` (ctx.run and ctx.dispatch commit by "
            "themselves)"
        )

    def add_to_batch(self, key: Any, value: Any) -> None:
        raise NoBatchTransaction(
            f"job {self.job!r} is declared transactional=False: it has no batch to add to"
        )

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction of its own, committed when the block ends without an exception."""
        with self._engine.begin() as conn:
            yield conn

    def run(self, command: Command) -> CommandResult:
        """Run a domain command in a transaction of its own (retried on a lost race)."""
        return self._bus.dispatch(command, self._command_context(command))

    def dispatch(
        self,
        job_name: str,
        message: DomainEvent,
        *,
        key: str | None = None,
        delay: timedelta | None = None,
    ) -> str | None:
        """Queue another job in a short transaction of its own, due at once or `delay` later."""
        with self.transaction() as conn:
            return self._dispatch_in(conn, job_name, message, key, delay)


def _raise_timeout(_signum: int, _frame: FrameType | None) -> None:
    raise JobTimeout


_UNARMED, _SIGNAL, _WATCHDOG = 0, 1, 2


class TimeLimiter:
    """Raises JobTimeout in the thread running a job that passes its time limit.

    In the main thread (a worker process) SIGALRM interrupts blocking calls too (sleep,
    socket reads). Elsewhere one watchdog thread per limiter, waking every 50 ms, delivers
    the exception at the job's next Python bytecode: a job blocked in C code is stopped when
    it returns, and the supervisor's process replacement is the backstop. Arming costs two
    attribute writes, not a thread per message (a Timer per message cost 0.1 ms).
    """

    def __init__(self, resolution_s: float = 0.05) -> None:
        self._resolution = resolution_s
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._target = 0
        self._watchdog: threading.Thread | None = None
        self._handler_installed = False

    @contextmanager
    def limit(self, seconds: float | None) -> Iterator[None]:
        armed = self.arm(seconds)
        try:
            yield
        finally:
            self.disarm(armed)

    def arm(self, seconds: float | None) -> int:
        """Start the clock for the calling thread; give the result to `disarm`. Two plain
        calls instead of a context manager: this runs for every message."""
        if not seconds:
            return _UNARMED
        if threading.current_thread() is threading.main_thread():
            if not self._handler_installed:
                signal.signal(signal.SIGALRM, _raise_timeout)  # once per process
                self._handler_installed = True
            signal.setitimer(signal.ITIMER_REAL, seconds)
            return _SIGNAL
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, daemon=True, name="job-timer")
            self._watchdog.start()
        self._target = threading.get_ident()
        self._deadline = time.monotonic() + seconds
        return _WATCHDOG

    def disarm(self, armed: int) -> None:
        if armed == _SIGNAL:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elif armed == _WATCHDOG:
            with self._lock:  # after this, the watchdog can no longer fire for this job
                self._deadline = None

    def _watch(self) -> None:
        while True:
            time.sleep(self._resolution)
            with self._lock:
                deadline = self._deadline
                if deadline is None or time.monotonic() < deadline:
                    continue
                self._deadline = None
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._target), ctypes.py_object(JobTimeout)
                )


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """A one-off time limit (tests, scripts); workers keep one TimeLimiter."""
    with TimeLimiter().limit(seconds):
        yield
