"""Substring search for the dashboard's lists, the same on every backend.

What an operator types is a fragment, matched anywhere, ignoring case: `ILIKE` on
PostgreSQL, which the trigram GIN indexes of migration 0020 serve (pg_trgm); `lower(x) LIKE
lower(y)` on SQLite and MariaDB, a scan of the rows (the documented slower path: bounded by
the failed-jobs table's size, and on the outbox by a window of the newest rows). `%`, `_`
and the escape character itself are literal: `100%` finds "100%", not "100" and anything.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, or_

__all__ = ["ESCAPE", "any_contains", "contains", "like_pattern"]

ESCAPE = "/"


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards in `text` made literal."""
    escaped = text.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%").replace("_", ESCAPE + "_")
    return f"%{escaped}%"


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """`column` holds `text` somewhere, case aside."""
    return column.ilike(like_pattern(text), escape=ESCAPE)  # type: ignore[no-any-return]


def any_contains(columns: list[Any], text: str) -> ColumnElement[bool]:
    return or_(*(contains(column, text) for column in columns))
