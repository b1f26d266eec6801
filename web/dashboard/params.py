"""What the dashboard accepts from a query string or a form, parsed in one place: any text in
gives a value or a `BadRequest` saying what to type, never another exception.

Times are the trap: `0001-01-01T00:00:00+14:00` parses but lies before the first UTC
instant Python can hold, and `9999-12-31T23:59:59-14:00` after the last; both used to raise
OverflowError deep in the database layer (a 500). A moment is turned to UTC here and must
fall between MIN_MOMENT and MAX_MOMENT (MariaDB's DATETIME starts at year 1000). Keys follow
the project's one id rule (`outbox.keys.key_problem`): no NUL, no leading or trailing space.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from outbox.keys import MAX_KEY_LENGTH, key_problem
from web.errors import BadRequest

__all__ = [
    "MAX_MOMENT",
    "MIN_MOMENT",
    "id_list",
    "id_param",
    "inbox_cursor",
    "key_param",
    "moment_param",
    "since_param",
    "stored_key_param",
    "text_param",
]

MIN_MOMENT = datetime(1000, 1, 1, tzinfo=UTC)
MAX_MOMENT = datetime(9999, 12, 30, tzinfo=UTC)
_CLEAN = re.compile(r"^[^\x00-\x1f\x7f]*$")
_RELATIVE = re.compile(r"^(\d{1,5})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def text_param(value: Any, name: str, max_length: int = 255) -> str | None:
    """A filter or search value: None when empty; 400 when too long or unprintable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if len(text) > max_length or not _CLEAN.match(text):
        raise BadRequest(f"{name}: at most {max_length} printable characters")
    return text


def id_param(value: Any, name: str) -> int | None:
    """A row id (a keyset cursor): a whole number that fits a BIGINT."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest(f"{name}: a row id (a whole number)")
    return int(value)


def moment_param(value: Any, name: str) -> datetime | None:
    """An ISO date or time (UTC when it gives no offset), as an aware UTC datetime."""
    text = text_param(value, name, 40)
    if text is None:
        return None
    return _moment(text, name)


def _moment(text: str, name: str) -> datetime:
    out_of_range = BadRequest(f"{name}: a time between the years 1000 and 9999")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{name}: give a date or time like 2026-12-01 or 2026-12-01T08:00:00Z"
        ) from None
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # before year 1 or after 9999 once in UTC
        raise out_of_range from None
    if not MIN_MOMENT <= moment <= MAX_MOMENT:
        raise out_of_range
    return moment


def since_param(value: Any, now: datetime, name: str = "since") -> datetime | None:
    """`15m`, `24h`, `7d`, or an ISO date or time (UTC when no offset is given)."""
    text = text_param(value, name, 40)
    if text is None:
        return None
    relative = _RELATIVE.match(text)
    if relative:
        try:
            moment = now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        except OverflowError:  # pragma: no cover - 99999d is 273 years
            raise BadRequest(f"{name}: too far back") from None
        return max(moment, MIN_MOMENT)
    try:
        return _moment(text, name)
    except BadRequest as exc:
        if "between" in str(exc):
            raise
        raise BadRequest(f"{name}: give 15m, 24h, 7d or a date like 2026-12-01") from None


def inbox_cursor(value: Any) -> tuple[datetime, str] | None:
    """The jobs page's `after=` cursor: `<processed_at ISO>|<message id>`."""
    text = text_param(value, "after", 200)
    if text is None:
        return None
    at, sep, message_id = text.partition("|")
    if not sep or not message_id or len(message_id) > 80:
        raise BadRequest("after: a cursor from the 'older' link")
    try:
        return _moment(at, "after"), message_id
    except BadRequest:
        raise BadRequest("after: a cursor from the 'older' link") from None


def key_param(value: Any, name: str = "key") -> str:
    """An aggregate key exactly as the project's id rule allows it (not stripped: a key
    with a leading space is refused, never quietly changed into another key)."""
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name}: the aggregate key, 1 to 255 characters")
    problem = key_problem(value)
    if problem is not None:
        raise BadRequest(f"{name} {problem}; give the key exactly as it is stored")
    return value


def stored_key_param(value: Any, name: str = "key") -> str:
    """A key to find among stored rows (a release): any text a database can hold, exactly.
    A parked key from before the id rule, or parked by hand, can hold characters the rule
    refuses today; it must still be releasable. NUL cannot be stored, so it is refused."""
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH:
        raise BadRequest(f"{name}: the aggregate key, 1 to {MAX_KEY_LENGTH} characters")
    if "\x00" in value:
        raise BadRequest(f"{name} contains NUL; give the key exactly as it is stored")
    return value


def id_list(form: Any, name: str, most: int) -> list[int]:
    """Row ids from repeated form fields: whole numbers that fit a BIGINT, at most `most`."""
    values = form.getlist(name)
    if len(values) > most:
        raise BadRequest(f"at most {most} rows at once; use 'all matching'")
    found = []
    for value in values:
        if (
            not isinstance(value, str)
            or not (value.isascii() and value.isdigit())
            or len(value) > 18
        ):
            raise BadRequest(f"{name}: row ids (whole numbers)")
        found.append(int(value))
    return found
