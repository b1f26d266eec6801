"""Reading the scheduler's tables (who leads, each job's last firing): the scheduler writes
them; status, coroner and `outbox scheduler --list` read them through here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select

from outbox.schema import scheduler_firings_table as firings
from outbox.schema import scheduler_leader_table as leader

__all__ = ["FiringRecord", "LeaderState", "last_firings", "last_scheduled_slot", "leader_state"]


@dataclass(frozen=True, slots=True)
class LeaderState:
    name: str
    owner: str | None
    epoch: int
    expires_at: datetime | None
    acquired_at: datetime | None

    def alive(self, now: datetime) -> bool:
        return self.owner is not None and self.expires_at is not None and self.expires_at > now


def leader_state(conn: Connection, name: str = "default") -> LeaderState | None:
    row = conn.execute(select(leader).where(leader.c.name == name)).first()
    if row is None:
        return None
    return LeaderState(row.name, row.owner, int(row.epoch), row.expires_at, row.acquired_at)


@dataclass(frozen=True, slots=True)
class FiringRecord:
    job: str
    slot: datetime
    fired_at: datetime
    owner: str
    outcome: str
    message_id: str | None
    coalesced: int
    manual: bool
    actor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "fired_at": self.fired_at,
            "outcome": self.outcome,
            "manual": self.manual,
            "message_id": self.message_id,
            "actor": self.actor,
        }


def last_firings(conn: Connection) -> dict[str, FiringRecord]:
    """The newest firing row of each job (scheduled or manual)."""
    newest = (
        select(firings.c.job, func.max(firings.c.fired_at).label("fired_at"))
        .group_by(firings.c.job)
        .subquery()
    )
    rows = conn.execute(
        select(firings).join(
            newest, and_(firings.c.job == newest.c.job, firings.c.fired_at == newest.c.fired_at)
        )
    )
    return {
        row.job: FiringRecord(
            job=row.job,
            slot=row.slot,
            fired_at=row.fired_at,
            owner=row.owner,
            outcome=row.outcome,
            message_id=row.message_id,
            coalesced=int(row.coalesced),
            manual=bool(row.manual),
            actor=row.actor,
        )
        for row in rows
    }


def last_scheduled_slot(conn: Connection, job: str | None = None) -> datetime | None:
    """The newest slot the schedule fired (manual runs aside), of one job or of any."""
    query = select(func.max(firings.c.slot)).where(firings.c.manual.is_(False))
    if job is not None:
        query = query.where(firings.c.job == job)
    slot: datetime | None = conn.execute(query).scalar()
    return slot
