"""The relay's marks: what one batch's outcomes write to the outbox, fenced on the lease.

- `mark_batch`: a batch's every outcome (published with its partition and offset, dead
  with its reason, deferred with its reason and back-off) in ONE statement on every
  backend; a batch with acknowledgements only (nearly all of them) takes the narrower
  `mark_published` statement.
- `mark_published` / `mark_dead` / `defer`: the same writes one kind at a time (tools,
  tests).

Fencing: a row is written only while this instance still holds its shard under the epoch
the row was claimed with and the lease has not expired, and only while the row is still
pending: a holder that stalled past its TTL and was replaced writes nothing (ADR 003).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, exists, func, select, update
from sqlalchemy.engine import Dialect

from outbox.schema import OutboxStatus
from outbox.schema import outbox_table as o
from outbox.schema import relay_leases_table as leases
from outbox.types import bind_processor

__all__ = [
    "Ack",
    "Failure",
    "Marked",
    "batch_statement",
    "defer",
    "mark_batch",
    "mark_dead",
    "mark_published",
    "published_statement",
]


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


@dataclass(frozen=True, slots=True)
class Marked:
    """How many rows of a batch one `mark_batch` wrote, by outcome."""

    published: int
    dead: int
    deferred: int


def _datetime(dialect: Dialect) -> Callable[[datetime], Any]:
    process = bind_processor(dialect, o.c.published_at)
    assert process is not None  # noqa: S101 - UTCDateTime always converts
    return process


def mark_batch(
    conn: Connection,
    owner: str,
    acks: Sequence[Ack],
    dead: Sequence[Failure],
    retry: Sequence[Failure],
    *,
    until: datetime,
    now: datetime,
) -> Marked:
    """Write a batch's outcomes in one statement (fenced); `retry` rows are deferred to
    `until` (attempts + 1, the reason kept), `dead` rows are dead with their reason."""
    total = len(acks) + len(dead) + len(retry)
    if not total:
        return Marked(0, 0, 0)
    if not dead and not retry:
        return Marked(mark_published(conn, owner, acks, now), 0, 0)
    sql, params = batch_statement(conn.dialect, owner, acks, dead, retry, until=until, now=now)
    written = int(conn.exec_driver_sql(sql, params).rowcount)
    if written == total:
        return Marked(len(acks), len(dead), len(retry))
    # Some rows were fenced (the lease moved) or are no longer pending: count what this
    # statement wrote. Rare (a lost lease with failures in the batch); one more read.
    published = _count(conn, [a.outbox_id for a in acks], OutboxStatus.PUBLISHED, now)
    killed = _count(conn, [f.outbox_id for f in dead], OutboxStatus.DEAD, None)
    return Marked(published, killed, max(0, written - published - killed))


def _count(conn: Connection, ids: list[int], status: str, published_at: datetime | None) -> int:
    if not ids:
        return 0
    query = select(func.count()).where(o.c.id.in_(ids), o.c.status == status)
    if published_at is not None:
        query = query.where(o.c.published_at == published_at)
    return int(conn.execute(query).scalar_one())


def batch_statement(
    dialect: Dialect,
    owner: str,
    acks: Sequence[Ack],
    dead: Sequence[Failure],
    retry: Sequence[Failure],
    *,
    until: datetime,
    now: datetime,
) -> tuple[str, Any]:
    """The one fenced UPDATE of `mark_batch`: a row of values per outcome (id, partition,
    offset, epoch, new status, reason, attempts added), joined to the leases on the row's
    own shard."""
    stamp, due = _datetime(dialect)(now), _datetime(dialect)(until)
    values: list[tuple[Any, ...]] = [
        (a.outbox_id, a.partition, a.offset, a.epoch, OutboxStatus.PUBLISHED, None, 0) for a in acks
    ]
    values += [(f.outbox_id, None, None, f.epoch, OutboxStatus.DEAD, f.reason, 1) for f in dead]
    values += [(f.outbox_id, None, None, f.epoch, OutboxStatus.PENDING, f.reason, 1) for f in retry]
    pub, pend = f"'{OutboxStatus.PUBLISHED}'", f"'{OutboxStatus.PENDING}'"
    if dialect.name == "postgresql":
        sql = (
            "UPDATE outbox AS o SET status = v.st, "  # noqa: S608
            f"published_at = CASE WHEN v.st = {pub} THEN %(now)s ELSE o.published_at END, "
            "kafka_partition = coalesce(v.p, o.kafka_partition), "
            "kafka_offset = coalesce(v.o, o.kafka_offset), attempts = o.attempts + v.a, "
            "last_error = coalesce(v.why, o.last_error), "
            f"available_at = CASE WHEN v.st = {pend} THEN %(until)s ELSE o.available_at END "
            "FROM unnest(%(ids)s::bigint[], %(parts)s::int[], %(offs)s::bigint[], "
            "%(epochs)s::bigint[], %(sts)s::text[], %(whys)s::text[], %(adds)s::int[]) "
            "AS v(id, p, o, e, st, why, a), relay_leases AS l "
            "WHERE o.id = v.id AND coalesce(o.status, '') = 'pending' "
            "AND l.shard = o.shard AND l.epoch = v.e AND l.owner = %(owner)s "
            "AND l.expires_at > %(now)s"
        )
        columns = list(zip(*values, strict=True))
        names = ("ids", "parts", "offs", "epochs", "sts", "whys", "adds")
        params: Any = {"now": stamp, "until": due, "owner": owner}
        params.update((name, list(column)) for name, column in zip(names, columns, strict=True))
        return sql, params
    flat = [v for row in values for v in row]
    if dialect.name == "sqlite":
        rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(values))
        sql = (
            "UPDATE outbox SET status = v.column5, "  # noqa: S608
            f"published_at = CASE WHEN v.column5 = {pub} THEN ? ELSE outbox.published_at END, "
            "kafka_partition = coalesce(v.column2, outbox.kafka_partition), "
            "kafka_offset = coalesce(v.column3, outbox.kafka_offset), "
            "attempts = outbox.attempts + v.column7, "
            "last_error = coalesce(v.column6, outbox.last_error), "
            f"available_at = CASE WHEN v.column5 = {pend} THEN ? ELSE outbox.available_at END "
            f"FROM (VALUES {rows}) AS v JOIN relay_leases AS l ON l.epoch = v.column4 "
            "WHERE outbox.id = v.column1 AND l.shard = outbox.shard "
            "AND coalesce(outbox.status, '') = 'pending' AND l.owner = ? AND l.expires_at > ?"
        )
        return sql, (stamp, due, *flat, owner, stamp)
    # MySQL / MariaDB: SET assigns left to right and later terms see earlier ones; none
    # reads a column assigned before it (status last).
    first = "SELECT %s AS id, %s AS p, %s AS o, %s AS e, %s AS st, %s AS why, %s AS a"
    union = " UNION ALL ".join([first] + ["SELECT %s, %s, %s, %s, %s, %s, %s"] * (len(values) - 1))
    sql = (
        f"UPDATE outbox AS o JOIN ({union}) AS v ON o.id = v.id "  # noqa: S608
        "JOIN relay_leases AS l ON l.shard = o.shard AND l.epoch = v.e "
        f"SET o.published_at = CASE WHEN v.st = {pub} THEN %s ELSE o.published_at END, "
        "o.kafka_partition = coalesce(v.p, o.kafka_partition), "
        "o.kafka_offset = coalesce(v.o, o.kafka_offset), o.attempts = o.attempts + v.a, "
        "o.last_error = coalesce(v.why, o.last_error), "
        f"o.available_at = CASE WHEN v.st = {pend} THEN %s ELSE o.available_at END, "
        "o.status = v.st "
        "WHERE coalesce(o.status, '') = 'pending' AND l.owner = %s AND l.expires_at > %s"
    )
    return sql, (*flat, stamp, due, owner, stamp)


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
    return _record_failures(conn, owner, failures, now, status=OutboxStatus.DEAD)


def defer(
    conn: Connection, owner: str, failures: Sequence[Failure], until: datetime, now: datetime
) -> int:
    """Retriable failures: count the attempt, keep the reason, try again after `until`."""
    return _record_failures(conn, owner, failures, now, available_at=until)


def _record_failures(
    conn: Connection, owner: str, failures: Sequence[Failure], now: datetime, **values: Any
) -> int:
    """attempts + 1 and the reason on each still-pending row, plus `values` (fenced)."""
    if not failures:
        return 0
    stmt = (
        update(o)
        .where(o.c.id == bindparam("b_id"), _STILL_PENDING)
        .where(_fenced(owner, now))
        .values(attempts=o.c.attempts + 1, last_error=bindparam("b_why"), **values)
    )
    rows = [{"b_id": f.outbox_id, "b_epoch": f.epoch, "b_why": f.reason} for f in failures]
    return int(conn.execute(stmt, rows).rowcount)
