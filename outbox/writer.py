"""Writes outbox rows inside the caller's transaction. The writer never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Insert

from outbox.envelope import Envelope, canonical_json, shard_for
from outbox.notify import notify
from outbox.schema import OutboxStatus, outbox_table
from outbox.types import utcnow

__all__ = ["INSERT_OUTBOX", "append", "outbox_rows"]

INSERT_OUTBOX: Insert = outbox_table.insert()


def outbox_rows(
    envelopes: Sequence[Envelope], *, shards: int, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Rows for `INSERT_OUTBOX`, one per envelope, in the given (publication) order."""
    created = now or utcnow()
    return [
        {
            "event_id": env.event_id,
            "topic": env.topic,
            "key": env.key,
            "shard": shard_for(env.key, shards),
            "type": env.type,
            "payload": env.payload,
            "headers": canonical_json(env.headers),
            "created_at": created,
            "available_at": env.available_at or created,
            "attempts": 0,
            "status": OutboxStatus.PENDING,
        }
        for env in envelopes
    ]


def append(
    conn: Connection, envelopes: Sequence[Envelope], *, shards: int, now: datetime | None = None
) -> int:
    """Insert one outbox row per envelope in the caller's open transaction; returns the count.

    On PostgreSQL the relays are notified when (and if) the caller commits.
    """
    rows = outbox_rows(envelopes, shards=shards, now=now)
    if rows:
        conn.execute(INSERT_OUTBOX, rows)
        notify(conn)
    return len(rows)
