"""Rebuilding the state tables: empty them and replay every stored event through
`domain.projections.project`, in stored order, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sqlalchemy import Connection, delete, select

from domain.event_store import row_to_recorded
from domain.events import EventRegistry, RecordedEvent
from domain.projections import project
from domain.schema import PROJECTION_TABLES, domain_events
from domain.write_plan import WritePlan

__all__ = ["rebuild_projections"]


def _all_events(conn: Connection, registry: EventRegistry, chunk: int) -> Iterator[RecordedEvent]:
    last = 0
    while True:
        rows = conn.execute(
            select(domain_events)
            .where(domain_events.c.position > last)
            .order_by(domain_events.c.position)
            .limit(chunk)
        ).all()
        if not rows:
            return
        for row in rows:
            yield row_to_recorded(row, registry)
        last = rows[-1].position


def rebuild_projections(
    conn: Connection,
    registry: EventRegistry,
    *,
    chunk: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Empty the state tables and replay every stored event into them (caller's transaction)."""
    for table in PROJECTION_TABLES:
        conn.execute(delete(table))
    count = 0
    for rec in _all_events(conn, registry, chunk):
        plan = WritePlan()
        plan.extend(project(rec))
        plan.execute(conn)
        count += 1
        if progress is not None and count % chunk == 0:
            progress(count)
    return count
