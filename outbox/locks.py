"""Named locks between processes, per backend in one place.

`exclusive(engine, name)` gives a connection with a transaction begun while this process
holds the lock `name`; other holders of the same name wait for it (up to `timeout_s`).

- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`, retried until the timeout,
  so a stuck holder is reported rather than waited on forever), released after the commit.
- MySQL/MariaDB: `GET_LOCK(name, timeout)`, released after the commit (`RELEASE_LOCK`).
- SQLite: the transaction itself is the lock (one writer at a time): `BEGIN IMMEDIATE`,
  or `BEGIN EXCLUSIVE` with `sqlite_exclusive=True`, waiting on the busy timeout and
  retried until `timeout_s`.

Used by `outbox db upgrade` (two at once: the second finds the schema current) and by
replay and prune (a replay's range is registered, and each prune batch decides what it
may delete, under one lock, so no batch deletes rows of a replay that has just started).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from outbox.errors import OutboxError

__all__ = ["REPLAY_RANGE_LOCK", "LockTimeout", "exclusive"]

# Taken by a replay while it registers its range, and by each prune batch (outbox.prune).
REPLAY_RANGE_LOCK = "outbox:replay-range"


class LockTimeout(OutboxError):
    """Another process held the named lock for longer than the caller would wait."""


def _key(name: str) -> int:
    """A stable signed 32-bit key for PostgreSQL's advisory lock space."""
    return zlib.crc32(name.encode()) - 2**31


def _acquire(conn: Connection, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    dialect = conn.dialect.name
    if dialect == "postgresql":
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _key(name)}).scalar():
            conn.commit()
            if time.monotonic() >= deadline:
                raise LockTimeout(f"another process has held {name!r} for over {timeout_s:g} s")
            time.sleep(0.05)
        conn.commit()
    elif dialect in ("mysql", "mariadb"):
        got = conn.execute(
            text("SELECT GET_LOCK(:n, :t)"), {"n": name[:64], "t": max(0, int(timeout_s))}
        ).scalar()
        conn.commit()
        if got != 1:
            raise LockTimeout(f"another process has held {name!r} for over {timeout_s:g} s")


def _release(conn: Connection, name: str) -> None:
    dialect = conn.dialect.name
    if conn.in_transaction():
        conn.rollback()
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(name)})
        conn.commit()
    elif dialect in ("mysql", "mariadb"):
        conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})
        conn.commit()


def _begin_sqlite(conn: Connection, exclusive_mode: bool, name: str, timeout_s: float) -> None:
    """Begin the transaction that is SQLite's lock, waiting past one busy timeout."""
    deadline = time.monotonic() + timeout_s
    if exclusive_mode:
        conn.execution_options(sqlite_begin="EXCLUSIVE")
    while True:
        try:
            conn.begin()
            return
        except OperationalError as exc:
            conn.rollback()
            if "locked" not in str(exc.orig):
                raise
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another process has held {name!r} for over {timeout_s:g} s"
                ) from None


@contextmanager
def exclusive(
    engine: Engine, name: str, *, timeout_s: float = 60.0, sqlite_exclusive: bool = False
) -> Iterator[Connection]:
    """A connection in a fresh transaction, holding `name`; commits on success, then releases."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            _begin_sqlite(conn, sqlite_exclusive, name, timeout_s)
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return
        _acquire(conn, name, timeout_s)
        try:
            with conn.begin():
                yield conn
        finally:
            _release(conn, name)
