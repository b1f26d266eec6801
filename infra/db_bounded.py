"""An engine whose every statement has a time limit, for the dashboard (ADR 018).

A page must answer within seconds even when a lock is held on its table or a filter matches
too much: the statement is stopped by the database and the page says so (503), instead of
holding a pooled connection for as long as the lock lasts.

* PostgreSQL: `statement_timeout` and `lock_timeout`, set once per connection (libpq
  `options`), so no statement costs an extra round trip.
* MariaDB: `max_statement_time`, `innodb_lock_wait_timeout` (row locks) and
  `lock_wait_timeout` (table and metadata locks), per connection; MySQL:
  `max_execution_time` (SELECTs) and the same two lock waits.
* SQLite: the busy timeout (a writer's lock), and a progress handler that interrupts a
  statement whose execution (its first step: sorting, aggregating) runs past the limit.

The pool is bounded (`connections`, no overflow) and waiting for a connection is bounded
(`pool_timeout_s`): a request that cannot get one is answered 503 at once.
"""

from __future__ import annotations

import math
import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

from infra.db import make_engine

__all__ = ["bounded_engine"]

# The SQLite progress handler is called every this many virtual-machine instructions.
_SQLITE_STEPS = 1000


def bounded_engine(
    url: str,
    *,
    statement_timeout_s: float,
    connections: int,
    pool_timeout_s: float = 2.0,
    connect_timeout_s: int = 3,
) -> Engine:
    backend = make_url(url).get_backend_name()
    ms = max(1, int(statement_timeout_s * 1000))
    options: dict[str, Any] = {"pool_timeout": pool_timeout_s}
    if backend == "sqlite":
        options |= {"pool_size": connections, "max_overflow": 0}
        engine = make_engine(url, **options)
        _sqlite_limits(engine, ms)
        return engine
    options |= {"pool_size": connections, "max_overflow": 0}
    connect_args: dict[str, Any] = {"connect_timeout": connect_timeout_s}
    if backend == "postgresql":
        connect_args["options"] = f"-c statement_timeout={ms} -c lock_timeout={ms}"
    options["connect_args"] = connect_args
    engine = make_engine(url, **options)
    if backend in ("mysql", "mariadb"):
        _mysql_limits(engine, statement_timeout_s)
    return engine


def _mysql_limits(engine: Engine, seconds: float) -> None:
    whole = max(1, math.ceil(seconds))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("SELECT VERSION()")
        (version,) = cur.fetchone()
        if "mariadb" in str(version).lower():
            cur.execute(
                f"SET SESSION max_statement_time = {seconds:.3f}, "
                f"innodb_lock_wait_timeout = {whole}, lock_wait_timeout = {whole}"
            )
        else:
            cur.execute(
                f"SET SESSION max_execution_time = {int(seconds * 1000)}, "
                f"innodb_lock_wait_timeout = {whole}, lock_wait_timeout = {whole}"
            )
        cur.close()


def _sqlite_limits(engine: Engine, ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        # After infra.db's own listener (registered first): a shorter busy timeout.
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={ms}")
        cur.close()
        deadline = [math.inf]
        record.info["statement_deadline"] = deadline
        dbapi_conn.set_progress_handler(
            lambda: 1 if time.monotonic() > deadline[0] else 0, _SQLITE_STEPS
        )

    @event.listens_for(engine, "before_cursor_execute")
    def _started(conn: Any, *_args: Any) -> None:
        deadline = conn.connection.info.get("statement_deadline")
        if deadline is not None:
            deadline[0] = time.monotonic() + ms / 1000

    @event.listens_for(engine, "after_cursor_execute")
    def _ended(conn: Any, *_args: Any) -> None:
        # The COMMIT or ROLLBACK that follows, maybe much later, is not limited.
        deadline = conn.connection.info.get("statement_deadline")
        if deadline is not None:
            deadline[0] = math.inf
