"""Errors of the web layer, and the one place that maps every error to an HTTP answer.

WebError                      (its `status` and `code` are the answer)
├── BadRequest                400  malformed headers or body (after verification)
│   └── MalformedSignature    400  a signature header that cannot be read
├── Unauthorized              401  missing, forged, stale or future signature
├── Forbidden                 403  a download URL tampered with, or another tenant's
├── NotFound                  404  no such gateway, route or file
├── Gone                      410  an expired download URL
├── PayloadTooLarge           413  a body over the limit
├── UnsupportedMediaType      415  not application/json
├── Unprocessable             422  a verified body that is not a payment notice
└── Unavailable               503  the database is unreachable: try again later

Domain and database errors raised by a handler are mapped in `answer_for`; anything else is
a 500 whose response carries the request id and never a traceback.
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


# Domain errors by class, most specific first.
_DOMAIN: tuple[tuple[type[DomainError], int, str], ...] = (
    (DomainNotFound, 404, "not_found"),
    (InvalidCommand, 422, "invalid"),
    (DomainError, 409, "refused"),
)


def _database_down(exc: BaseException) -> str | None:
    if isinstance(exc, ProgrammingError) and is_missing_schema(exc):
        return "the database is not migrated; try again later"
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return _DB_DOWN
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
        return Answer(503, "unavailable", down)
    return Answer(500, "internal_error", "internal error; quote the request id when reporting it")
