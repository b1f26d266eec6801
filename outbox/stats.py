"""Read-only figures about the outbox, shared by the relay's metrics and the tooling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from outbox.schema import OutboxStatus
from outbox.schema import outbox_table as o

__all__ = ["Backlog", "backlog"]


@dataclass(frozen=True, slots=True)
class Backlog:
    by_status: dict[str, int]
    oldest_pending_age_s: float


def backlog(conn: Connection, now: datetime) -> Backlog:
    """Rows by status (every status present, zero when none) and the oldest pending age."""
    counts = dict.fromkeys([s.value for s in OutboxStatus], 0)
    for status, count in conn.execute(select(o.c.status, func.count()).group_by(o.c.status)):
        counts[status] = int(count)
    oldest = conn.execute(
        select(func.min(o.c.created_at)).where(o.c.status == OutboxStatus.PENDING)
    ).scalar()
    age = 0.0
    if oldest is not None:
        age = max(0.0, (now - oldest).total_seconds())
    return Backlog(counts, age)
