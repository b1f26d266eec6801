"""Engines tuned per backend: SQLite WAL + BEGIN IMMEDIATE, PostgreSQL and MySQL defaults.

`check_database_url` is the one check of a URL (DATABASE_URL, `demo --database-url`): it
names what is wrong (not a URL, a backend or driver we do not support, a driver that is
not installed, a bad port) without echoing the password; `masked_url` is the URL as it may
be shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from infra.errors import SettingsError

__all__ = [
    "SUPPORTED_URLS",
    "check_database_url",
    "make_engine",
    "masked_url",
    "use_generic_plans",
]

SUPPORTED_URLS = "sqlite:///PATH, postgresql+psycopg://..., mysql+pymysql:// or mariadb+pymysql://"
_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")


def masked_url(text: str) -> str:
    """The URL with its password as ***; unparseable text with anything password-like masked."""
    try:
        return make_url(text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        from infra.logs import redact_text

        return redact_text(text)


def _parse(text: str) -> URL:
    try:
        return make_url(text)
    except ArgumentError:
        raise ValueError(f"is not a database URL; use {SUPPORTED_URLS}") from None
    except (ValueError, TypeError) as exc:  # a port that is not a number, say
        raise ValueError(f"is not a valid URL ({exc}); use {SUPPORTED_URLS}") from None


def check_database_url(text: str) -> URL:
    """The parsed URL, or ValueError saying what is wrong (the password never appears)."""
    url = _parse(text)
    backend = url.get_backend_name()
    if backend not in _BACKENDS:
        raise ValueError(f"backend {backend!r} is not supported; use {SUPPORTED_URLS}")
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"driver {url.get_driver_name()!r} is unknown for {backend}; use {SUPPORTED_URLS}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(
            f"the {backend} driver {url.get_driver_name()!r} is not installed ({exc}); "
            f"use {SUPPORTED_URLS}"
        ) from None
    if url.port is not None and not 1 <= url.port <= 65535:
        raise ValueError(f"port {url.port} is out of range (1-65535)")
    if backend == "sqlite" and url.database and "\x00" in url.database:
        raise ValueError("the SQLite path contains a NUL character")
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    # A statement error's text never carries the values (personal data, secrets): logs and
    # tracebacks show the SQL only.
    kwargs.setdefault("hide_parameters", True)
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
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = "not a directory" if isinstance(exc, FileExistsError) else exc.strerror
            raise SettingsError(
                f"DATABASE_URL: cannot create the SQLite file's directory {folder}: {why or exc}"
            ) from None
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, emit BEGIN; see SQLAlchemy's "Serializable isolation".
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # The busy timeout first: switching a new file to WAL needs its lock too, and two
        # processes opening it at once (two `db upgrade`) must wait, not fail.
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: two writers queue on busy_timeout
        # instead of both reading and one failing with SQLITE_BUSY on its first write.
        # `outbox.locks.exclusive` asks for EXCLUSIVE (readers wait too) for migrations.
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql("BEGIN EXCLUSIVE" if mode == "EXCLUSIVE" else "BEGIN IMMEDIATE")

    return engine


GENERIC_PLANS_SQL = "SET plan_cache_mode = force_generic_plan"


def use_generic_plans(engine: Engine) -> Engine:
    """PostgreSQL 12+: every new connection of `engine` plans a prepared statement once
    (`plan_cache_mode = force_generic_plan`), other backends unchanged; returns `engine`.

    For the relay, whose claim (one UNION ALL arm per shard over the outbox's partitions)
    psycopg prepares after five runs: PostgreSQL's default then re-plans it with each
    claim's values (custom plans prune partitions by the cursors, so it judges them
    cheaper) at ~3 ms a claim; the generic plan prunes at run time instead. Measured in
    the relay at 200 commands/s (docs/performance.md): the claim p50 9.4 -> 5.2-6.0 ms. A
    SET on connect, not a startup `options` parameter, which connection poolers such as
    PgBouncer refuse."""
    if engine.dialect.name != "postgresql":
        return engine

    @event.listens_for(engine, "connect")
    def _generic_plans(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn.info.server_version < 120000:  # PostgreSQL 12 added the setting
            return
        with dbapi_conn.cursor() as cur:
            cur.execute(GENERIC_PLANS_SQL)
        dbapi_conn.commit()  # a SET in a transaction rolled back would be undone

    return engine
