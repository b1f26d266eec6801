"""SQL the packages share that differs per backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import mysql, postgresql, sqlite

__all__ = ["insert_ignoring_duplicate", "insert_missing_for_update"]


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


def insert_missing_for_update(conn: Connection, table: Any, values: dict[str, Any]) -> None:
    """Make sure the row exists (inserted with `values` if missing), ready for the caller's
    `SELECT ... FOR UPDATE`, without a lock-upgrade deadlock between concurrent callers.

    MySQL/MariaDB: INSERT IGNORE takes a shared lock on an existing row, and two callers each
    holding one then both asking FOR UPDATE deadlock; ON DUPLICATE KEY UPDATE (a no-op
    assignment) takes the exclusive lock at once. PostgreSQL's ON CONFLICT DO NOTHING locks
    nothing; SQLite writers run one at a time.
    """
    if conn.dialect.name in ("mysql", "mariadb"):
        key = next(iter(table.primary_key.columns))
        stmt = mysql.insert(table).values(**values)
        conn.execute(stmt.on_duplicate_key_update({key.name: key}))
        return
    insert_ignoring_duplicate(conn, table, values)
