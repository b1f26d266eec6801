"""Operators' bulk actions run in the background (the dashboard's "retry / delete all
matching"): one row per run with who, what, the filter as confirmed, the reason and the
progress, so a page can follow it and the audit log can name it.

A run works in chunks, each in its own short transaction that does the chunk's work, adds
its audit row and moves `done` forward: the progress never says more than was done, and a
run cut short (the process stopped) is seen by its stale `updated_at`. Its remaining rows
are still there: starting the action again finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Connection, Index, Integer, String, Table, Text, select, update

from outbox.schema import metadata
from outbox.types import ExactString, UTCDateTime

__all__ = ["BulkRun", "RunState", "bulk_runs_table", "finish", "get", "progress", "start"]


class RunState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


bulk_runs_table = Table(
    "bulk_runs",
    metadata,
    Column("id", ExactString(36), primary_key=True),
    Column("actor", ExactString(128), nullable=False),
    # retry | delete, on `target` (failed_jobs)
    Column("action", String(32), nullable=False),
    Column("target", String(32), nullable=False),
    # The filter as the operator confirmed it (JSON text) and its words on the page.
    Column("filter", Text, nullable=False),
    Column("described", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("reviewed_by", ExactString(128), nullable=True),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("state", String(16), nullable=False),
    Column("message", Text, nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Index("ix_bulk_runs_started_at", "started_at"),
)


@dataclass(frozen=True, slots=True)
class BulkRun:
    id: str
    actor: str
    action: str
    target: str
    filter: str
    described: str
    reason: str | None
    reviewed_by: str | None
    total: int
    done: int
    state: str
    message: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.done / self.total)) if self.total else 100


def start(conn: Connection, run_id: str, *, now: datetime, **fields: Any) -> None:
    """Record a new run (state running, nothing done yet)."""
    conn.execute(
        bulk_runs_table.insert().values(
            id=run_id, state=RunState.RUNNING, done=0, started_at=now, updated_at=now, **fields
        )
    )


def progress(conn: Connection, run_id: str, done: int, now: datetime) -> None:
    """Add `done` to the run's count, in the caller's (the chunk's) transaction."""
    b = bulk_runs_table
    conn.execute(update(b).where(b.c.id == run_id).values(done=b.c.done + done, updated_at=now))


def finish(
    conn: Connection, run_id: str, state: RunState, message: str | None, now: datetime
) -> None:
    b = bulk_runs_table
    conn.execute(
        update(b)
        .where(b.c.id == run_id)
        .values(
            state=state, message=(message or "")[:2000] or None, finished_at=now, updated_at=now
        )
    )


def get(conn: Connection, run_id: str) -> BulkRun | None:
    row = conn.execute(select(bulk_runs_table).where(bulk_runs_table.c.id == run_id)).first()
    return BulkRun(**row._mapping) if row is not None else None


def recent(conn: Connection, limit: int = 20) -> list[BulkRun]:
    b = bulk_runs_table
    rows = conn.execute(select(b).order_by(b.c.started_at.desc()).limit(limit))
    return [BulkRun(**row._mapping) for row in rows]
