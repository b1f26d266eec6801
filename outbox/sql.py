"""SQL the packages share that differs per backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import mysql, postgresql, sqlite

__all__ = ["insert_ignoring_duplicate"]


def insert_ignoring_duplicate(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
    """INSERT unless the key exists, without aborting the caller's transaction; True if new.

    PostgreSQL and SQLite say whether a row went in through RETURNING (SQLAlchemy does not
    promise an INSERT's rowcount); MySQL's INSERT IGNORE reports it as the row count.
    """
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        dialect_insert = postgresql.insert if name == "postgresql" else sqlite.insert
        key = next(iter(table.primary_key.columns))
        stmt = dialect_insert(table).values(**values).on_conflict_do_nothing().returning(key)
        return conn.execute(stmt).first() is not None
    return bool(conn.execute(mysql.insert(table).values(**values).prefix_with("IGNORE")).rowcount)
