"""Read-only figures about the outbox, shared by the relay's metrics and the tooling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from outbox.schema import OutboxStatus, failed_jobs_table
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


@dataclass(frozen=True, slots=True)
class FailedJobGroup:
    """Failed jobs of one group for one reason (e.g. `reused_id`: an event id handled
    before with another payload). Handled records, so shown, not an alarm."""

    group: str
    reason: str
    count: int
    last_failed_at: datetime


def failed_job_groups(conn: Connection, limit: int) -> list[FailedJobGroup]:
    f = failed_jobs_table
    return [
        FailedJobGroup(group, reason, int(count), last)
        for group, reason, count, last in conn.execute(
            select(f.c.group_name, f.c.reason, func.count(), func.max(f.c.failed_at))
            .group_by(f.c.group_name, f.c.reason)
            .order_by(func.count().desc())
            .limit(limit)
        )
    ]
