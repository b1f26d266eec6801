"""Read-only figures about the outbox, shared by the relay's metrics and the tooling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from outbox.schema import OutboxStatus
from outbox.schema import outbox_table as o
from outbox.schema import relay_instances_table as instances

__all__ = ["Backlog", "alive_relays", "backlog"]


@dataclass(frozen=True, slots=True)
class Backlog:
    by_status: dict[str, int]
    oldest_pending_age_s: float


def backlog(conn: Connection, now: datetime) -> Backlog:
    """Rows by status (every status present, zero when none) and the oldest pending age."""
    counts = dict.fromkeys(OutboxStatus.ALL, 0)
    for status, count in conn.execute(select(o.c.status, func.count()).group_by(o.c.status)):
        counts[status] = int(count)
    oldest = conn.execute(
        select(func.min(o.c.created_at)).where(o.c.status == OutboxStatus.PENDING)
    ).scalar()
    age = 0.0
    if oldest is not None:
        if oldest.tzinfo is None:  # min() of a naive column skips the type's result processing
            oldest = oldest.replace(tzinfo=now.tzinfo)
        age = max(0.0, (now - oldest).total_seconds())
    return Backlog(counts, age)


def alive_relays(conn: Connection, now: datetime, ttl: timedelta) -> int:
    return int(
        conn.execute(select(func.count()).where(instances.c.heartbeat_at > now - ttl)).scalar_one()
    )
