"""The command bus: one transaction per command, bounded retries on concurrency conflicts."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import Connection, Engine, exists, select
from sqlalchemy.exc import DBAPIError

from domain.commands import Command, Handler, HandlerRegistry, handlers
from domain.errors import CommitOutcomeUnknown, ConcurrencyError
from domain.events import EventRegistry, RecordedEvent, registry
from domain.schema import PROJECTION_TABLES, domain_events
from domain.unit_of_work import CommandContext, UnitOfWork
from domain.write_plan import Insert
from outbox.envelope import DEFAULT_MAX_MESSAGE_BYTES
from outbox.types import utcnow

__all__ = ["CommandBus", "CommandResult", "Hooks"]

log = structlog.get_logger(__name__)

# Driver error codes meaning "another transaction got there first; run the command again".
_RETRIABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock (PostgreSQL)
_RETRIABLE_MYSQL_CODES = {1213, 1205}  # deadlock, lock wait timeout


def _conflict_markers() -> tuple[str, ...]:
    """How each backend names the unique keys a lost race or a taken id violates.

    The event store's UNIQUE(aggregate_id, version), and the primary key of each state
    table (keyed by aggregate id): on PostgreSQL the unit of work is one statement, and
    which of its unique keys is checked first is not defined.
    """
    markers = [
        "uq_domain_events_aggregate_version",  # PostgreSQL and MySQL name the constraint
        "domain_events.aggregate_id, domain_events.version",  # SQLite names the columns
        "for key 'PRIMARY'",  # MySQL/MariaDB
    ]
    for table in PROJECTION_TABLES:
        columns = ", ".join(f"{table.name}.{c.name}" for c in table.primary_key.columns)
        markers += [
            f'"{table.name}_pkey"',
            f"UNIQUE constraint failed: {columns}",
            f"for key '{table.name}.PRIMARY'",
        ]
    return tuple(markers)


_CONFLICT_MARKERS = _conflict_markers()


@dataclass
class Hooks:
    """Extension points around the commit (PostgreSQL NOTIFY, crash tests)."""

    before_commit: list[Callable[[Connection, list[RecordedEvent]], None]] = field(
        default_factory=list
    )
    after_commit: list[Callable[[list[RecordedEvent]], None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CommandResult:
    aggregate_id: str
    events: list[RecordedEvent]
    attempts: int


def is_concurrency_conflict(exc: BaseException) -> bool:
    """True when a database error means another writer won a race we can retry."""
    orig = getattr(exc, "orig", exc)
    text = str(orig)
    if any(marker in text for marker in _CONFLICT_MARKERS):
        return True
    if getattr(orig, "sqlstate", None) in _RETRIABLE_SQLSTATES:
        return True
    args: tuple[object, ...] = getattr(orig, "args", ())
    return len(args) > 0 and args[0] in _RETRIABLE_MYSQL_CODES


class _Retry(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandBus:
    def __init__(
        self,
        engine: Engine,
        *,
        shards: int,
        events: EventRegistry = registry,
        command_handlers: HandlerRegistry = handlers,
        clock: Callable[[], datetime] = utcnow,
        max_attempts: int = 5,
        hooks: Hooks | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.engine = engine
        self._shards = shards
        self._events = events
        self._handlers = command_handlers
        self._clock = clock
        self._max_attempts = max_attempts
        # An event whose Kafka record would be larger is refused here, not marked dead later.
        self._max_message_bytes = max_message_bytes
        self.hooks = hooks or Hooks()

    def dispatch(self, command: Command, context: CommandContext | None = None) -> CommandResult:
        """Run a command in its own transaction; retry on a lost race, then say so clearly."""
        handler = self._handlers.for_command(command)
        if context is None:
            context = CommandContext(tenant_id=getattr(command, "tenant_id", None))
        started = time.perf_counter()
        # Every log line a handler writes carries the command's correlation id and tenant.
        with structlog.contextvars.bound_contextvars(
            correlation_id=context.correlation_id, tenant_id=context.tenant_id
        ):
            return self._dispatch(command, handler, context, started)

    def run_in(
        self,
        conn: Connection,
        command: Command,
        context: CommandContext | None = None,
        *,
        first: Sequence[Insert] = (),
    ) -> CommandResult:
        """Run a command inside the caller's open transaction: no commit, no retry.

        For consumers, whose effects must commit atomically with their inbox row. A lost
        race raises the driver's error, and the caller's retry policy decides what next.
        `first`: rows of the caller's, written before the events in the same write (on
        PostgreSQL the same statement).
        """
        handler = self._handlers.for_command(command)
        if context is None:
            context = CommandContext(tenant_id=getattr(command, "tenant_id", None))
        uow = UnitOfWork(
            conn,
            self._events,
            now=self._clock(),
            context=context,
            shards=self._shards,
            max_message_bytes=self._max_message_bytes,
            first=first,
        )
        aggregate_id = handler(command, uow)
        records = uow.flush()
        for before in self.hooks.before_commit:
            before(conn, records)
        return CommandResult(aggregate_id, records, 1)

    def _dispatch(
        self, command: Command, handler: Handler, context: CommandContext, started: float
    ) -> CommandResult:
        for attempt in range(1, self._max_attempts + 1):
            try:
                aggregate_id, records = self._attempt(command, handler, context, attempt)
            except _Retry as retry:
                if attempt == self._max_attempts:
                    raise ConcurrencyError(
                        f"{type(command).__name__} {retry.reason} {attempt} times; "
                        "nothing was written, try again later"
                    ) from retry.__cause__
                # Jittered back-off so the losers do not collide again in lock-step.
                time.sleep(random.uniform(0, 0.002 * 2**attempt))  # noqa: S311 - not crypto
                continue
            for after in self.hooks.after_commit:
                after(records)
            log.info(
                "command_handled",
                command=type(command).__name__,
                aggregate_id=aggregate_id,
                events=len(records),
                attempts=attempt,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            return CommandResult(aggregate_id, records, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, command: Command, handler: Handler, context: CommandContext, attempt: int
    ) -> tuple[str, list[RecordedEvent]]:
        """One try: on PostgreSQL (no hooks before the commit) the handler's reads and then
        the unit of work's one statement in autocommit, else one transaction. Raises _Retry
        when running it again is safe."""
        committing = False
        one_statement = self._one_statement()
        with self.engine.connect() as conn:
            try:
                if one_statement:
                    # The handler's reads, then the unit of work's ONE statement (atomic by
                    # itself, domain.write_plan): no BEGIN or COMMIT round trips.
                    uow = self._unit(conn.execution_options(isolation_level="AUTOCOMMIT"),
                                     context, attempt)  # fmt: skip
                    aggregate_id = handler(command, uow)
                    committing = True  # the write is the commit
                    records = uow.flush()
                else:
                    with conn.begin() as trans:
                        uow = self._unit(conn, context, attempt)
                        aggregate_id = handler(command, uow)
                        records = uow.flush()
                        for before in self.hooks.before_commit:
                            before(conn, records)
                        committing = True
                        trans.commit()
            except DBAPIError as exc:
                if committing and exc.connection_invalidated and one_statement:
                    # One statement is all or nothing: its first event row says which.
                    if not self._stored(uow.sent):
                        raise _Retry("lost its database connection before the write") from exc
                    return aggregate_id, uow.sent
                if committing and exc.connection_invalidated:
                    raise CommitOutcomeUnknown(
                        f"the database connection was lost while committing "
                        f"{type(command).__name__}; it may or may not have been applied. "
                        "Check its effect (by its id) before running it again."
                    ) from exc
                # A statement the server refused wrote nothing, whether or not it committed.
                if (not committing or one_statement) and is_concurrency_conflict(exc):
                    raise _Retry("lost the race to concurrent writers") from exc
                if not committing and exc.connection_invalidated:
                    raise _Retry("lost its database connection before commit") from exc
                raise
        return aggregate_id, records

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A connection for a caller's own write around `run_in`, committed when the block
        ends: where a command runs in autocommit (`_one_statement`), autocommit, the unit of
        work's one statement being the commit (no BEGIN or COMMIT round trip); else a
        transaction."""
        if self._one_statement():
            with self.engine.connect() as conn:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            with self.engine.begin() as conn:
                yield conn

    def _one_statement(self) -> bool:
        """PostgreSQL, where a unit of work's writes are one statement: the command runs in
        autocommit, unless hooks must run between its writes and its commit."""
        return self.engine.dialect.name == "postgresql" and not self.hooks.before_commit

    def _stored(self, sent: list[RecordedEvent]) -> bool:
        """Whether a write whose connection was lost in flight was stored, asked on a fresh
        connection; CommitOutcomeUnknown when that cannot be told either."""
        if not sent:
            return False
        try:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(exists().where(domain_events.c.event_id == sent[0].event_id))
                ).scalar()
        except DBAPIError as exc:
            raise CommitOutcomeUnknown(
                "the database connection was lost while writing a command, and the database "
                "cannot be asked whether it was applied: check its effect (by its id) before "
                "running it again"
            ) from exc
        return bool(found)

    def _unit(self, conn: Connection, context: CommandContext, attempt: int) -> UnitOfWork:
        return UnitOfWork(
            conn,
            self._events,
            now=self._clock(),
            context=context,
            shards=self._shards,
            attempt=attempt,
            max_message_bytes=self._max_message_bytes,
        )
