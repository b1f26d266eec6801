"""Engines tuned per backend: SQLite WAL + BEGIN IMMEDIATE, PostgreSQL and MySQL defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["make_engine"]


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, parsed.database, **kwargs)
    if backend in ("mysql", "mariadb"):
        kwargs.setdefault("pool_recycle", 3600)
        # READ COMMITTED: a retried command must see the rows that beat it, not its snapshot.
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    # No pool_pre_ping: it costs a round trip per command. A connection found dead is
    # invalidated by SQLAlchemy and the command bus re-runs a command that had not reached
    # COMMIT (optimistic disconnect handling, see docs/adr/002).
    return create_engine(url, **kwargs)


def _sqlite_engine(url: str, database: str | None, **kwargs: Any) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, emit BEGIN; see SQLAlchemy's "Serializable isolation".
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: two writers queue on busy_timeout
        # instead of both reading and one failing with SQLITE_BUSY on its first write.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
