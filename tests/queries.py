"""Read-only queries the tests use to check what a command left in the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, func, select

from domain.schema import domain_events


def count_rows(engine: Engine, table: Table, *where: ColumnElement[bool]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def versions_of(engine: Engine, aggregate_id: str) -> list[Any]:
    """The stored versions of one aggregate, in order (contiguous when nothing was lost)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(domain_events.c.version)
                .where(domain_events.c.aggregate_id == aggregate_id)
                .order_by(domain_events.c.version)
            ).scalars()
        )
