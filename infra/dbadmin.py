"""Database administration used by tests, benchmarks and the demo: create, empty."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

__all__ = ["create_database_if_missing", "drop_all_tables"]


def create_database_if_missing(url: str) -> None:
    """Create the PostgreSQL or MySQL database named in `url` (SQLite creates files itself)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return
    name = parsed.database or ""
    if backend == "postgresql":
        admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if not found:
                quoted = admin.dialect.identifier_preparer.quote(name)
                conn.execute(text(f"CREATE DATABASE {quoted}"))
    else:
        admin = create_engine(parsed.set(database=""))
        with admin.begin() as conn:
            quoted = admin.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS {quoted}"))
    admin.dispose()


def drop_all_tables(engine: Engine) -> None:
    """Drop every table (including alembic_version): a fresh schema for the next upgrade."""
    names = inspect(engine).get_table_names()
    cascade = " CASCADE" if engine.dialect.name == "postgresql" else ""
    with engine.begin() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            conn.execute(text("SET FOREIGN_KEY_CHECKS=0"))
        for name in names:
            quoted = engine.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"DROP TABLE IF EXISTS {quoted}{cascade}"))
