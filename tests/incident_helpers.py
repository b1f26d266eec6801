"""Shared by the incident-tooling tests: a database on SQLite and PostgreSQL, old rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from outbox import OutboxStatus, audit_log_table, outbox_table, parked_keys_table
from outbox.types import utcnow

# The incident tools run on SQLite (embedded) and PostgreSQL (production): the conftest
# `engine` fixture, restricted to those two.
SQLITE_AND_POSTGRES = pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def db(engine: Engine) -> Engine:
    """A migrated, empty database (mark the module with SQLITE_AND_POSTGRES)."""
    return engine


def age_rows(engine: Engine, ids: list[int], *, days: float, status: str | None = None) -> None:
    """Make rows look `days` old (created, available and, when published, published)."""
    then = utcnow() - timedelta(days=days)
    values: dict[str, Any] = {"created_at": then, "available_at": then}
    if status is not None:
        values["status"] = status
    if status == OutboxStatus.PUBLISHED:
        values |= {"published_at": then, "kafka_partition": 0, "kafka_offset": 0}
    with engine.begin() as conn:
        conn.execute(update(outbox_table).where(outbox_table.c.id.in_(ids)).values(**values))


def ids_of(engine: Engine, *where: Any) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(outbox_table.c.id).where(*where).order_by(outbox_table.c.id)
            ).scalars()
        )


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything an operator command could change, to check that it changed nothing."""
    o = outbox_table
    with engine.connect() as conn:
        rows = conn.execute(
            select(o.c.id, o.c.status, o.c.attempts, o.c.available_at).order_by(o.c.id)
        ).all()
        audits = conn.execute(select(func.count()).select_from(audit_log_table)).scalar_one()
        parked = conn.execute(select(parked_keys_table.c.key)).scalars().all()
    return tuple(map(tuple, rows)), audits, tuple(parked)


def now() -> datetime:
    return utcnow()


@pytest.fixture
def cli_db(db: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """`db`, and DATABASE_URL pointing the `outbox` CLI at it."""
    monkeypatch.setenv("DATABASE_URL", db.url.render_as_string(hide_password=False))
    return db
