"""Each attempt of a job, carried along with the message: when it ended, how long it ran,
and the exception it raised.

A failed attempt that is retried writes its retry copy with the `x-attempts` header: the
history it read from its own record plus itself. The last attempt stores the whole list in
its failed_jobs row's headers, so an operator sees every attempt of a failed job (the
dashboard's failed-job page) without a table of its own. The header arrives on a record
that may be forged: `read_attempts` keeps only well-formed entries, each field bounded,
and at most MAX_KEPT of them (the newest).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from consumers._internal.bounded import escaped
from consumers.headers import Headers

__all__ = ["ATTEMPTS_HEADER", "MAX_KEPT", "aware_moment", "entry", "read_attempts", "with_attempt"]

ATTEMPTS_HEADER = Headers.ATTEMPTS
MAX_KEPT = 20
_ERROR_CHARS = 300
_MAX_ATTEMPT = 1000


def entry(
    attempt: int, at: datetime, took_s: float, error: BaseException | None, message: str
) -> dict[str, Any]:
    """One attempt as the header keeps it."""
    text = f"{type(error).__qualname__}: {message}" if error is not None else message
    return {
        "n": int(attempt),
        "at": at.isoformat(),
        "ms": round(max(0.0, took_s) * 1000, 3),
        "error": escaped(text, _ERROR_CHARS),
    }


def read_attempts(headers: Any) -> list[dict[str, Any]]:
    """The well-formed entries of a headers mapping's `x-attempts`, oldest first."""
    raw = headers.get(ATTEMPTS_HEADER) if isinstance(headers, dict) else None
    if not isinstance(raw, str) or len(raw) > 64_000:
        return []
    try:
        found = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(found, list):
        return []
    return [e for e in (_entry(item) for item in found[-MAX_KEPT:]) if e is not None]


def _entry(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    n, at, ms, error = item.get("n"), item.get("at"), item.get("ms"), item.get("error")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= _MAX_ATTEMPT:
        return None
    when = aware_moment(at)
    if when is None or not isinstance(ms, int | float) or not _duration_ok(ms):
        return None
    return {
        "n": n,
        "at": when,
        "ms": float(ms),
        "error": escaped(error, _ERROR_CHARS) if isinstance(error, str) else "",
    }


def aware_moment(text: Any) -> datetime | None:
    """An ISO time with its offset, from text that may be anything; else None."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _duration_ok(ms: Any) -> bool:
    number = isinstance(ms, int | float) and not isinstance(ms, bool)
    return number and math.isfinite(ms) and ms >= 0


def with_attempt(headers: Any, new: dict[str, Any]) -> str:
    """The `x-attempts` value for the next copy: what the record carried, and `new`."""
    kept = [{**e, "at": e["at"].isoformat()} for e in read_attempts(headers)]
    return json.dumps([*kept, new][-MAX_KEPT:], ensure_ascii=True)
