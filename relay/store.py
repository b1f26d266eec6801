"""The relay's reads and writes of the outbox table.

- `claim`: pending rows of the held shards, each shard in id order (one aggregate's rows
  share a shard, so this is version order per key). One index range scan per shard
  (ix_outbox_status_shard_id), no row locks: the shard lease is the lock.
- `mark_published`: every acknowledged row with its own partition and offset in ONE
  statement, fenced: a row is marked only while this instance still holds its shard under
  the epoch it was claimed with.
- `mark_dead` / `defer`: the rare paths, fenced the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, exists, func, select, union_all, update
from sqlalchemy.engine import Dialect

from outbox.schema import OutboxStatus
from outbox.schema import outbox_table as o
from outbox.schema import relay_leases_table as leases

__all__ = ["Ack", "Failure", "claim", "defer", "mark_dead", "mark_published"]

CLAIM_COLUMNS = (
    o.c.id,
    o.c.event_id,
    o.c.topic,
    o.c.key,
    o.c.shard,
    o.c.type,
    o.c.payload,
    o.c.headers,
    o.c.created_at,
    o.c.available_at,
    o.c.attempts,
)


@dataclass(frozen=True, slots=True)
class Ack:
    outbox_id: int
    shard: int
    epoch: int
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Failure:
    outbox_id: int
    epoch: int
    reason: str


def claim(
    conn: Connection, quotas: Mapping[int, int], skip_keys: Sequence[str] = ()
) -> list[Row[Any]]:
    """Up to `quotas[shard]` pending rows of each shard, in id order per shard."""
    if not quotas:
        return []
    parts = []
    for shard in sorted(quotas):
        query = select(*CLAIM_COLUMNS).where(o.c.status == OutboxStatus.PENDING, o.c.shard == shard)
        if skip_keys:
            query = query.where(o.c.key.not_in(list(skip_keys)))
        parts.append(query.order_by(o.c.id).limit(quotas[shard]))
    if len(parts) == 1:
        return list(conn.execute(parts[0]))
    # Each member keeps its own ORDER BY/LIMIT inside a derived table (SQLite, MySQL).
    members = [select(*part.subquery().c) for part in parts]
    return list(conn.execute(union_all(*members)))


def _datetime(dialect: Dialect) -> Callable[[datetime], Any]:
    process = o.c.published_at.type.bind_processor(dialect)
    assert process is not None  # noqa: S101 - UTCDateTime always converts
    return process


def mark_published(conn: Connection, owner: str, acks: Sequence[Ack], now: datetime) -> int:
    """Mark acknowledged rows published (fenced); returns how many were marked."""
    if not acks:
        return 0
    sql, params = published_statement(conn.dialect, owner, acks, now)
    return int(conn.exec_driver_sql(sql, params).rowcount)


def published_statement(
    dialect: Dialect, owner: str, acks: Sequence[Ack], now: datetime
) -> tuple[str, Any]:
    """The one fenced UPDATE of `mark_published`, in the dialect's SQL and parameters."""
    stamp = _datetime(dialect)(now)
    if dialect.name == "postgresql":
        sql = (
            "UPDATE outbox AS o SET status = 'published', published_at = %(now)s, "
            "kafka_partition = v.p, kafka_offset = v.o "
            "FROM unnest(%(ids)s::bigint[], %(parts)s::int[], %(offs)s::bigint[], "
            "%(shards)s::int[], %(epochs)s::bigint[]) AS v(id, p, o, s, e), relay_leases AS l "
            "WHERE o.id = v.id AND o.shard = v.s AND coalesce(o.status, '') = 'pending' "
            "AND l.shard = v.s AND l.epoch = v.e AND l.owner = %(owner)s "
            "AND l.expires_at > %(now)s"
        )
        params: Any = {
            "now": stamp,
            "owner": owner,
            "ids": [a.outbox_id for a in acks],
            "parts": [a.partition for a in acks],
            "offs": [a.offset for a in acks],
            "shards": [a.shard for a in acks],
            "epochs": [a.epoch for a in acks],
        }
    elif dialect.name == "sqlite":
        # A statement starting with WITH gets rowcount -1 from sqlite3: VALUES goes in FROM
        # instead, where SQLite names its columns column1..column4.
        values = ", ".join(["(?, ?, ?, ?, ?)"] * len(acks))
        sql = (
            "UPDATE outbox SET status = 'published', published_at = ?, "  # noqa: S608
            "kafka_partition = v.column2, kafka_offset = v.column3 "
            f"FROM (VALUES {values}) AS v JOIN relay_leases AS l "
            "ON l.shard = v.column4 AND l.epoch = v.column5 "
            "WHERE outbox.id = v.column1 AND outbox.shard = v.column4 "
            "AND coalesce(outbox.status, '') = 'pending' AND l.owner = ? AND l.expires_at > ?"
        )
        flat: list[Any] = [stamp]
        for a in acks:
            flat += (a.outbox_id, a.partition, a.offset, a.shard, a.epoch)
        params = (*flat, owner, stamp)
    else:  # MySQL / MariaDB
        first = "SELECT %s AS id, %s AS p, %s AS o, %s AS s, %s AS e"
        rows = " UNION ALL ".join([first] + ["SELECT %s, %s, %s, %s, %s"] * (len(acks) - 1))
        sql = (
            f"UPDATE outbox AS o JOIN ({rows}) AS v ON o.id = v.id AND o.shard = v.s "  # noqa: S608
            "JOIN relay_leases AS l ON l.shard = v.s AND l.epoch = v.e "
            "SET o.status = 'published', o.published_at = %s, "
            "o.kafka_partition = v.p, o.kafka_offset = v.o "
            "WHERE coalesce(o.status, '') = 'pending' AND l.owner = %s AND l.expires_at > %s"
        )
        flat = []
        for a in acks:
            flat += (a.outbox_id, a.partition, a.offset, a.shard, a.epoch)
        params = (*flat, stamp, owner, stamp)
    return sql, params


# Every mark finds its rows by primary key. A plain `status = 'pending'` would let the
# planner drive the update from the status index when its statistics think pending rows
# are rare (seen: after a backlog appeared, 7 s per batch, scanning every pending row per
# id). coalesce() keeps the check and takes that index out of the planner's hands.
_STILL_PENDING = func.coalesce(o.c.status, "") == OutboxStatus.PENDING


def _fenced(owner: str, now: datetime) -> Any:
    return exists(
        select(leases.c.shard).where(
            leases.c.shard == o.c.shard,
            leases.c.owner == owner,
            leases.c.epoch == bindparam("b_epoch"),
            leases.c.expires_at > now,
        )
    )


def mark_dead(conn: Connection, owner: str, failures: Sequence[Failure], now: datetime) -> int:
    """Rows that can never be sent: `dead` with the reason, at once (fenced)."""
    if not failures:
        return 0
    stmt = (
        update(o)
        .where(o.c.id == bindparam("b_id"), _STILL_PENDING)
        .where(_fenced(owner, now))
        .values(status=OutboxStatus.DEAD, attempts=o.c.attempts + 1, last_error=bindparam("b_why"))
    )
    rows = [{"b_id": f.outbox_id, "b_epoch": f.epoch, "b_why": f.reason} for f in failures]
    return int(conn.execute(stmt, rows).rowcount)


def defer(
    conn: Connection, owner: str, failures: Sequence[Failure], until: datetime, now: datetime
) -> int:
    """Retriable failures: count the attempt, keep the reason, try again after `until`."""
    if not failures:
        return 0
    stmt = (
        update(o)
        .where(o.c.id == bindparam("b_id"), _STILL_PENDING)
        .where(_fenced(owner, now))
        .values(attempts=o.c.attempts + 1, last_error=bindparam("b_why"), available_at=until)
    )
    rows = [{"b_id": f.outbox_id, "b_epoch": f.epoch, "b_why": f.reason} for f in failures]
    return int(conn.execute(stmt, rows).rowcount)
