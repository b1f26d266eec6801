"""The outbox on the dashboard: rows by status, topic and key (keyset on the primary key,
newest first), and the batches and audit lists, all bounded reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, or_, select

from outbox.schema import audit_log_table as audit
from outbox.schema import job_batches_table as batches
from outbox.schema import outbox_table as o
from web.dashboard.search import contains

__all__ = ["TOPIC_WINDOW", "OutboxQuery", "audit_page", "batches_page", "outbox_page"]

TOPIC_WINDOW = 200_000

COLUMNS = (
    o.c.id,
    o.c.event_id,
    o.c.topic,
    o.c.key,
    o.c.shard,
    o.c.type,
    o.c.status,
    o.c.attempts,
    o.c.created_at,
    o.c.available_at,
    o.c.published_at,
    o.c.last_error,
    o.c.replay_id,
)


@dataclass(frozen=True)
class OutboxQuery:
    status: str | None = None
    topic: str | None = None
    key: str | None = None
    # A fragment of a key (web.dashboard.search), or an event id exactly.
    search: str | None = None


def outbox_page(
    conn: Connection, which: OutboxQuery, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    query = select(*COLUMNS).order_by(o.c.id.desc()).limit(limit)
    if which.status:
        query = query.where(o.c.status == which.status)
    if which.topic:
        query = query.where(o.c.topic == which.topic)
        if not which.key and which.status not in ("pending", "dead", "parked"):
            # No index leads with the topic (each costs every command a write): a topic's
            # published rows are looked for among the newest TOPIC_WINDOW rows.
            top = conn.execute(select(func.max(o.c.id))).scalar() or 0
            query = query.where(o.c.id > top - TOPIC_WINDOW)
    if which.key:
        query = query.where(o.c.key == which.key)
    if which.search:
        query = query.where(or_(contains(o.c.key, which.search), o.c.event_id == which.search))
        # No trigram index on the outbox on any backend (it would cost every command a
        # write): the substring search scans only the newest TOPIC_WINDOW rows (an event id
        # is found wherever it is: its own lookup).
        top = conn.execute(select(func.max(o.c.id))).scalar() or 0
        query = query.where(or_(o.c.id > top - TOPIC_WINDOW, o.c.event_id == which.search))
    if before is not None:
        query = query.where(o.c.id < before)
    return [dict(r._mapping) for r in conn.execute(query)]


def batches_page(
    conn: Connection, *, state: str | None, before: datetime | None, limit: int
) -> list[dict[str, Any]]:
    query = select(batches).order_by(batches.c.created_at.desc()).limit(limit)
    if state == "running":
        query = query.where(batches.c.finished_at.is_(None))
    elif state == "finished":
        query = query.where(batches.c.finished_at.is_not(None))
    if before is not None:
        query = query.where(batches.c.created_at < before)
    found = []
    for row in conn.execute(query):
        item = dict(row._mapping)
        total = max(1, int(row.total))
        item["done"] = int(row.total) - int(row.pending)
        item["percent"] = round(100 * item["done"] / total)
        item["failed_percent"] = round(100 * int(row.failed) / total)
        found.append(item)
    return found


def audit_page(
    conn: Connection,
    *,
    actor: str | None,
    action: str | None,
    before: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    query = select(audit).order_by(audit.c.id.desc()).limit(limit)
    if actor:
        query = query.where(audit.c.actor == actor)
    if action:
        query = query.where(audit.c.action == action)
    if before is not None:
        query = query.where(audit.c.id < before)
    return [dict(r._mapping) for r in conn.execute(query)]


def topics_seen(conn: Connection) -> list[str]:
    """Topics of the newest rows, for the filter's choices (a bounded look)."""
    top = conn.execute(select(func.max(o.c.id))).scalar() or 0
    rows = conn.execute(
        select(o.c.topic).where(o.c.id > top - 20_000).group_by(o.c.topic).order_by(o.c.topic)
    )
    return list(rows.scalars())
