"""Errors of the web layer, and the one place that maps every error to an HTTP answer.

WebError                      (its `status` and `code` are the answer)
├── BadRequest                400  malformed headers or body (after verification)
│   └── MalformedSignature    400  a signature header that cannot be read
├── Unauthorized              401  missing, forged, stale or future signature
├── Forbidden                 403  a download URL tampered with, or another tenant's
├── NotFound                  404  no such gateway, route or file
├── Gone                      410  an expired download URL
├── PayloadTooLarge           413  a body over the limit
├── UriTooLong                414  a download path over the limit (in web.downloads)
├── UnsupportedMediaType      415  not application/json
├── Unprocessable             422  a verified body that is not a payment notice
└── Unavailable               503  the database is unreachable: try again later

Domain and database errors raised by a handler are mapped in `answer_for`; a statement
that ran past its time limit (or waited past it for a lock or a pooled connection) is a 503
`timeout`, not "the database is unavailable"; anything else is a 500 whose response carries
the request id and never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from domain.errors import DomainError, InvalidCommand
from domain.errors import NotFound as DomainNotFound
from outbox.schema import is_missing_schema

__all__ = [
    "Answer",
    "BadRequest",
    "Forbidden",
    "Gone",
    "MalformedSignature",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "WebError",
    "answer_for",
    "timed_out",
]


class WebError(Exception):
    status = 500
    code = "internal_error"


class BadRequest(WebError):
    status, code = 400, "bad_request"


class MalformedSignature(BadRequest):
    code = "malformed_signature"


class Unauthorized(WebError):
    status, code = 401, "unauthorized"


class Forbidden(WebError):
    status, code = 403, "forbidden"


class NotFound(WebError):
    status, code = 404, "not_found"


class Gone(WebError):
    status, code = 410, "gone"


class PayloadTooLarge(WebError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(WebError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(WebError):
    status, code = 422, "unprocessable"


class Unavailable(WebError):
    status, code = 503, "unavailable"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    code: str
    message: str


_DB_DOWN = "the database is unavailable; nothing was written, try again later"
_TIMED_OUT = (
    "this took longer than its time limit (a lock held elsewhere, or a filter that matches "
    "too much); nothing was written: try again, or narrow the filters"
)
_BUSY = "too many requests are waiting for the database; nothing was written, try again"
# PostgreSQL: query_canceled (statement_timeout) and lock_not_available (lock_timeout).
_PG_TIMEOUTS = frozenset({"57014", "55P03"})
# MariaDB max_statement_time, MySQL max_execution_time, lock wait timeout, interrupted.
_MYSQL_TIMEOUTS = frozenset({1969, 3024, 1205, 1317})


# Domain errors by class, most specific first.
_DOMAIN: tuple[tuple[type[DomainError], int, str], ...] = (
    (DomainNotFound, 404, "not_found"),
    (InvalidCommand, 422, "invalid"),
    (DomainError, 409, "refused"),
)


def timed_out(exc: BaseException) -> bool:
    """A statement stopped by its time limit, or its lock wait by the lock timeout."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_TIMEOUTS:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TIMEOUTS:
        return True
    # SQLite: interrupted by the statement time limit's progress handler, or a lock held
    # past the busy timeout.
    text = str(orig)
    return type(orig).__module__ == "sqlite3" and ("interrupted" in text or "locked" in text)


def _database_down(exc: BaseException) -> tuple[str, str] | None:
    if isinstance(exc, ProgrammingError) and is_missing_schema(exc):
        return "unavailable", "the database is not migrated; try again later"
    if isinstance(exc, PoolTimeout):
        return "busy", _BUSY
    if timed_out(exc):
        return "timeout", _TIMED_OUT
    if isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return "unavailable", _DB_DOWN
    return None


def answer_for(exc: BaseException) -> Answer:
    """What the client is told for an error. Messages of unexpected errors stay out of the
    answer (the log has their class); the client gets the request id to quote."""
    if isinstance(exc, WebError):
        return Answer(exc.status, exc.code, str(exc))
    for cls, status, code in _DOMAIN:
        if isinstance(exc, cls):
            return Answer(status, code, str(exc))
    down = _database_down(exc)
    if down is not None:
        return Answer(503, *down)
    return Answer(500, "internal_error", "internal error; quote the request id when reporting it")
