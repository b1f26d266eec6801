"""The database session behind a connection, and ending it from another connection.

When a job's time runs out inside a database call, the client gives up on the connection
but the server does not: PostgreSQL goes on with the statement (a `pg_sleep`, a lock wait)
and keeps the batch's row locks, including its uncommitted inbox rows, until the statement
ends. Recording the timed-out attempt would wait for those very locks. So the worker notes
its session id when a batch starts and, when the batch is lost that way, ends the session
(`pg_terminate_backend`, MariaDB's `KILL`) before recording. SQLite needs nothing: closing
the connection in this process rolls its transaction back at once.

Also: a worker refuses to start on a database that is not migrated.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DBAPIError

from consumers.errors import ConsumerError
from outbox.schema import inbox_table, is_missing_schema

__all__ = ["check_migrated", "not_migrated", "session_id", "terminate"]

log = structlog.get_logger("consumers._internal.backends")


def session_id(conn: Connection) -> int | None:
    """The server's id of this connection's session (no round trip), where there is one."""
    raw = conn.connection.dbapi_connection
    name = conn.dialect.name
    if name == "postgresql":
        return int(raw.info.backend_pid)  # type: ignore[union-attr]
    if name in ("mysql", "mariadb"):
        return int(raw.thread_id())  # type: ignore[union-attr]
    return None


def terminate(engine: Engine, session: int | None) -> None:
    """End a session left running by a lost connection (best effort, logged)."""
    if session is None:
        return
    statement = {
        "postgresql": "SELECT pg_terminate_backend(:s)",
        "mysql": "KILL :s",
        "mariadb": "KILL :s",
    }.get(engine.dialect.name)
    if statement is None:
        return
    try:
        with engine.connect() as conn:
            conn.execute(text(statement), {"s": session})
            conn.commit()
    except DBAPIError as exc:  # already gone (MariaDB: "Unknown thread id")
        log.info("consumer_session_not_terminated", session=session, error=str(exc.orig)[:200])


def check_migrated(engine: Engine) -> None:
    """Raise ConsumerError when the database is not migrated (the inbox is missing)."""
    try:
        with engine.connect() as conn:
            conn.execute(select(inbox_table.c.message_id).limit(0))
    except DBAPIError as exc:
        if is_missing_schema(exc):
            raise not_migrated(exc) from exc
        raise


def not_migrated(exc: DBAPIError) -> ConsumerError:
    return ConsumerError(f"the database is not migrated ({exc.orig}): run `outbox db upgrade`")
