"""Errors of the consumer runtime, and which failures of a job are permanent. Each message
says what to do next.

The runtime's own errors have one root, `ConsumerRuntimeError` (catch it to catch them
all); the subclasses keep the builtin base they always had, so older `except` clauses
still match:

    ConsumerRuntimeError
    ├── ConsumerError              the worker cannot go on (not migrated, bad configuration)
    │   ├── WorkerBrokerUnavailable  no Kafka broker answered
    │   └── ReviewRequired         retrying money jobs without a review (consumers.failed_jobs)
    ├── DoNotRetry                 a job says its message can never succeed (`reason`)
    │   ├── RecordMismatch         the database disagrees with the message (consumers.trust)
    │   └── NotVerified            the record could not be checked (consumers.trust)
    ├── NoBatchTransaction         (a RuntimeError) a `transactional=False` job asked for
    │                              `ctx.connection`
    ├── InvalidDelay               (a ValueError) a dispatch's delay is out of bounds
    ├── SourceUnavailable          no broker answered a source (consumers.source)
    └── Poison                     a record no retry can fix (consumers.incoming)

Outside the root on purpose, as BaseExceptions that a job's `except Exception` must not
swallow: `JobTimeout` (here: a job ran past its `timeout_s`) and `BatchLost` (the attempt
path's: the batch's connection is gone).

What a job raises is sorted by `permanent(exc)`, called once per failed attempt by the
attempt path (consumers._internal.attempt_path): a permanent failure goes to failed_jobs
(and the DLQ)
after this one attempt, with the reason below; anything else keeps the job's retry schedule
(`tries`, `backoff`) and goes to failed_jobs only after its last try.

    permanent (failed at once)                           reason
    ├── DoNotRetry (and its subclasses)                  rejected
    ├── pydantic ValidationError, domain InvalidCommand  invalid
    │   (a negative or 10^30 amount, a gateway name that is not one)
    ├── domain EventSchemaError                          invalid
    ├── domain NotFound                                  not_found
    ├── domain RuleViolation (AlreadyExists, ...)        rule_violation
    ├── sqlalchemy DataError (too long, out of range)    data_error
    └── sqlalchemy IntegrityError on a business key      integrity_error
        (a payment id reused on another order: the payment ledger's key), a foreign key
        or a NOT NULL column
    transient (retried with back-off)
    ├── domain ConcurrencyError, CommitOutcomeUnknown, RefundBeforePayment (and any
    │   other DomainError not named above)
    ├── IntegrityError on the event store's (aggregate_id, version) or an aggregate's
    │   own row (another writer won the race; the next attempt sees its result)
    ├── OperationalError, InterfaceError, a lost connection (deadlock, lock timeout,
    │   serialization failure, connection refused or reset)
    └── everything else (OSError, TimeoutError, a job's own exception)

The inbox's own IntegrityError never reaches this: the claim inserts with ON CONFLICT DO
NOTHING (or reads first), and a row already there means "seen", not failed.
"""

from __future__ import annotations

import re

from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError

from domain.bus import is_concurrency_conflict
from domain.errors import EventSchemaError, InvalidCommand, NotFound, RuleViolation

__all__ = [
    "ConsumerError",
    "ConsumerRuntimeError",
    "DoNotRetry",
    "InvalidDelay",
    "JobTimeout",
    "NoBatchTransaction",
    "WorkerBrokerUnavailable",
    "add_business_key",
    "permanent",
]


class ConsumerRuntimeError(Exception):
    """The root of the consumer runtime's errors (the tree is drawn above)."""


class DoNotRetry(ConsumerRuntimeError):
    """Raised by a job whose message can never succeed (a corrupt file, say): it is failed
    at once, with this message as the reason, instead of being retried. A subclass may name
    its failed-job reason (`record_mismatch`, `not_verified`); the default is `rejected`."""

    reason = "rejected"


class NoBatchTransaction(ConsumerRuntimeError, RuntimeError):
    """A `transactional=False` job asked for `ctx.connection`: it has no batch transaction
    and opens its own with `ctx.transaction()`."""


class InvalidDelay(ConsumerRuntimeError, ValueError):
    """A dispatch's delay is not a timedelta from zero to consumers.dispatch.MAX_DELAY."""


class JobTimeout(BaseException):
    """Raised inside a job that ran past its timeout. A BaseException, so that a handler's
    own `except Exception` does not swallow it."""


class ConsumerError(ConsumerRuntimeError):
    """The worker cannot go on (not migrated, bad configuration)."""


class WorkerBrokerUnavailable(ConsumerError):
    """No Kafka broker answered."""


# Tables whose unique key names a business fact, not an aggregate's identity: a violation is
# the same fact claimed twice (a payment id on two orders), which no retry changes. The
# application declares them (add_business_key).
_BUSINESS_KEYS: set[str] = set()
_PERMANENT: tuple[tuple[type[Exception], str], ...] = (
    (DoNotRetry, "rejected"),  # or the reason its subclass names
    (InvalidCommand, "invalid"),
    (EventSchemaError, "invalid"),
    (NotFound, "not_found"),
    (RuleViolation, "rule_violation"),
)


def permanent(exc: BaseException) -> tuple[str, str] | None:
    """(reason, message) when no retry can make this attempt succeed; None: transient."""
    if isinstance(exc, ValidationError):
        return "invalid", _validation(exc)
    for kind, reason in _PERMANENT:
        if isinstance(exc, kind):
            return (exc.reason if isinstance(exc, DoNotRetry) else reason), str(exc)
    if isinstance(exc, DataError) and not exc.connection_invalidated:
        return "data_error", f"the database refused a value: {_driver(exc)}"
    if isinstance(exc, IntegrityError) and not exc.connection_invalidated:
        if is_concurrency_conflict(exc) and not _business_key(exc):
            return None  # a lost race: the next attempt sees the winner's rows
        return "integrity_error", f"the database refused a duplicate or missing key: {_driver(exc)}"
    return None


def add_business_key(table: str) -> None:
    """Declare `table`'s primary key a business fact: a duplicate there fails the job at
    once (`integrity_error`) instead of being retried as a lost race."""
    _BUSINESS_KEYS.add(table)


def _business_key(exc: IntegrityError) -> bool:
    """The violated key is a business key. PostgreSQL, SQLite and MySQL name the table in
    the message; MariaDB says only "for key 'PRIMARY'", so its statement tells (on MySQL
    and MariaDB the unit of work writes one table per statement)."""
    text = str(exc.orig)
    statement = exc.statement or ""
    for table in _BUSINESS_KEYS:
        if f"{table}_pkey" in text or f"{table}." in text:
            return True
        if "for key 'PRIMARY'" in text and re.match(rf"\s*INSERT INTO `?{table}\b", statement):
            return True
    return False


def _validation(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )
    return f"{exc.title} refused: {problems}"[:1000]


def _driver(exc: DataError | IntegrityError) -> str:
    """The driver's message, its first line only (PostgreSQL adds DETAIL lines that quote
    the values, which may be personal data)."""
    orig = exc.orig if exc.orig is not None else exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first}"[:500]
