"""Column types that behave the same on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "Amount",
    "BigId",
    "ExactString",
    "LongText",
    "UTCDateTime",
    "bind_processor",
    "result_processor",
    "utcnow",
]

# SQLite only auto-increments an INTEGER PRIMARY KEY, so the 64-bit id is a variant there.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Amounts and quantities (cents, stock): 64-bit everywhere (SQLite's INTEGER already is).
Amount = BigInteger().with_variant(Integer(), "sqlite")

# MySQL TEXT stops at 64 KiB; payloads may be larger (the relay decides what is too large).
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def utcnow() -> datetime:
    return datetime.now(UTC)


def exact_collation(dialect: Dialect) -> str:
    """MySQL/MariaDB's binary, NO PAD collation: `ANVIL` != `anvil`, `café` != `cafe`, and
    `anvil   ` != `anvil` (utf8mb4_bin is PAD SPACE: it ignores trailing spaces)."""
    return "utf8mb4_nopad_bin" if getattr(dialect, "is_mariadb", False) else "utf8mb4_0900_bin"


class ExactString(TypeDecorator[str]):
    """An id or key column that compares exactly, byte for byte, on every backend.

    PostgreSQL and SQLite compare text exactly already; MySQL/MariaDB's default collation
    (utf8mb4_general_ci) folds case and accents, so there the column gets a binary NO PAD
    collation (migration 0006).
    """

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(
                mysql.VARCHAR(self.length, collation=exact_collation(dialect))
            )
        return dialect.type_descriptor(String(self.length))


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, microseconds kept on every backend.

    Stored naive-UTC because SQLite and MySQL have no time zone type; MySQL DATETIME
    drops fractions unless told fsp=6.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - SQLite returns str only for raw SQL
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


# Code that writes raw driver SQL (the write plan, the relay's hot path) converts values
# with SQLAlchemy's own processors, so stored data is identical to what Core would store.
_binds: dict[tuple[str, Column[Any]], Callable[[Any], Any] | None] = {}
_results: dict[tuple[str, Column[Any]], Callable[[Any], Any] | None] = {}


def bind_processor(dialect: Dialect, column: Column[Any]) -> Callable[[Any], Any] | None:
    """The column type's Python -> driver conversion for this dialect (cached)."""
    key = (dialect.name, column)
    if key not in _binds:
        # The dialect's implementation, as Core uses: on SQLite the TypeDecorator alone hands
        # sqlite3 a datetime, whose adapter drops ".000000" at whole seconds, so such a time
        # would not compare equal to the same time bound by Core.
        _binds[key] = column.type.dialect_impl(dialect).bind_processor(dialect)
    return _binds[key]


def result_processor(dialect: Dialect, column: Column[Any]) -> Callable[[Any], Any] | None:
    """The column type's driver -> Python conversion for this dialect (cached)."""
    key = (dialect.name, column)
    if key not in _results:
        _results[key] = column.type.dialect_impl(dialect).result_processor(dialect, None)
    return _results[key]
