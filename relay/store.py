"""The relay's reads and writes of the outbox table.

- `claim`: pending rows of the held shards, each shard in id order (one aggregate's rows
  share a shard, so this is version order per key), from the shard's cursor on (the lowest
  id that may still be pending there, kept by `relay.claiming`, ADR 013). One index range
  scan per shard (ix_outbox_status_shard_id) that starts at the cursor, so the entries of
  rows published before it (dead entries VACUUM cannot remove while an old snapshot is
  open) are never read; no row locks: the shard lease is the lock.
- `claim_due`: a shard's due rows past a head of delayed ones (only while that starves).
- `parked_keys`: the keys an operator parked (`outbox park`); the loop reads them before
  each claim and skips their rows, also rows committed after the park.
- the marks (what a batch's outcomes write, fenced on the lease epoch) live in
  `relay.marks` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Integer,
    bindparam,
    exists,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.engine import Dialect

from outbox.schema import OutboxStatus
from outbox.schema import outbox_table as o
from outbox.schema import parked_keys_table as parked
from outbox.types import result_processor
from relay.marks import (
    Ack,
    Failure,
    Marked,
    defer,
    mark_batch,
    mark_dead,
    mark_published,
    published_statement,
)

__all__ = [
    "Ack",
    "Claimed",
    "Failure",
    "Marked",
    "claim",
    "claim_due",
    "defer",
    "mark_batch",
    "mark_dead",
    "mark_published",
    "parked_keys",
    "published_statement",
]

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


class Claimed(NamedTuple):
    """A claimed row. relay.messages.to_message reads the first nine fields by position."""

    id: int
    event_id: str
    topic: str
    key: str
    shard: int
    type: str
    payload: str
    headers: str
    created_at: datetime
    available_at: datetime
    attempts: int


def claim(
    conn: Connection,
    quotas: Mapping[int, int],
    skip_keys: Sequence[str] = (),
    cursors: Mapping[int, int] | None = None,
    in_flight: Mapping[int, set[int]] | None = None,
) -> list[Claimed]:
    """Up to `quotas[shard]` pending rows of each shard with id >= `cursors[shard]` (0 when
    not given: the whole shard), in id order per shard, leaving out the ids of
    `in_flight[shard]` (the batch at the broker while the relay pipelines, ADR 003).

    The hot path: the SQL is rendered once per shape and sent with the driver's own
    parameters, and rows are read as plain tuples. SQLAlchemy's statement cache and
    per-row type processing cost 7.5 ms per 1,000 rows here, the query itself 1.9 ms.
    Rows in flight are read (the quota grows by their number) and dropped before they are
    converted: exact, where skipping their range of ids would hide a row committed late
    inside it while its key's later rows were claimed.
    """
    if not quotas:
        return []
    shards = sorted(quotas)
    dialect = conn.dialect
    shape = (dialect.name, len(shards), len(skip_keys))
    compiled = _claim_sql.get(shape)
    if compiled is None:
        compiled = _claim_sql[shape] = _render_claim(dialect, len(shards), len(skip_keys))
    sql, names, defaults = compiled
    flying = in_flight or {}
    values: dict[str, Any] = {**defaults}
    values.update((f"k{i}", key) for i, key in enumerate(skip_keys))
    for i, shard in enumerate(shards):
        values[f"s{i}"] = shard
        values[f"l{i}"] = quotas[shard] + len(flying.get(shard, ()))
        values[f"c{i}"] = cursors.get(shard, 0) if cursors else 0
    params: Any = tuple(values[n] for n in names) if names is not None else values
    dt = _result_datetime(dialect)
    result = conn.exec_driver_sql(sql, params)
    if not flying:
        return [
            Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], dt(r[8]), dt(r[9]), r[10])
            for r in result
        ]
    skip = set().union(*flying.values())
    rows: list[Claimed] = []
    counts: dict[int, int] = {}
    for r in result:
        if r[0] in skip or counts.get(r[4], 0) >= quotas[r[4]]:
            continue
        counts[r[4]] = counts.get(r[4], 0) + 1
        rows.append(
            Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], dt(r[8]), dt(r[9]), r[10])
        )
    return rows


def claim_due(conn: Connection, shard: int, limit: int, now: datetime) -> list[Claimed]:
    """Up to `limit` due rows of one shard, in id order, each with no earlier pending row of
    its key that is not yet due: the way past a shard head full of delayed rows.

    Not the hot path: the loop calls it only for a shard whose claim filled its quota and
    gave nothing to send (every row held back), so it walks the shard's pending rows past
    the delayed ones once per batch while that lasts. A key's row whose earlier row waits
    is left for later, so the per-key order holds."""
    earlier = o.alias("earlier")
    waiting = exists().where(
        earlier.c.key == o.c.key,
        earlier.c.status == OutboxStatus.PENDING,
        earlier.c.id < o.c.id,
        earlier.c.available_at > now,
    )
    query = (
        select(*CLAIM_COLUMNS)
        .where(
            o.c.status == OutboxStatus.PENDING,
            o.c.shard == shard,
            o.c.available_at <= now,
            ~waiting,
        )
        .order_by(o.c.id)
        .limit(limit)
    )
    return [Claimed(*row) for row in conn.execute(query)]


_PARKED_SQL: dict[str, str] = {}


def parked_keys(conn: Connection) -> list[str]:
    """Keys held by an operator. A separate primary-key read on the claim's connection: a
    NOT EXISTS probe inside the claim cost ~1 ms per 1,000 rows even with the table empty,
    this costs one round trip per batch."""
    sql = _PARKED_SQL.get(conn.dialect.name)
    if sql is None:
        sql = _PARKED_SQL[conn.dialect.name] = str(
            select(parked.c.key).compile(dialect=conn.dialect)
        )
    return [row[0] for row in conn.exec_driver_sql(sql)]


_Rendered = tuple[str, tuple[str, ...] | None, dict[str, Any]]
_claim_sql: dict[tuple[str, int, int], _Rendered] = {}


def _render_claim(dialect: Dialect, shards: int, skips: int) -> _Rendered:
    """SQL text with bound parameters s0.., c0.., l0.., k0..; the parameter order if positional;
    the values the compiler fixed itself (SQLite's OFFSET 0)."""
    parts = []
    for i in range(shards):
        query = select(*CLAIM_COLUMNS).where(
            o.c.status == literal_column(f"'{OutboxStatus.PENDING}'"),
            o.c.shard == bindparam(f"s{i}"),
            o.c.id >= bindparam(f"c{i}", type_=o.c.id.type),
        )
        if skips:
            query = query.where(o.c.key.not_in([bindparam(f"k{j}") for j in range(skips)]))
        parts.append(query.order_by(o.c.id).limit(bindparam(f"l{i}", type_=Integer)))
    # Each member keeps its own ORDER BY/LIMIT inside a derived table (SQLite, MySQL).
    stmt = (
        parts[0] if len(parts) == 1 else union_all(*[select(*part.subquery().c) for part in parts])
    )
    compiled = stmt.compile(dialect=dialect)
    names = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    defaults = {k: v for k, v in compiled.params.items() if v is not None}
    return str(compiled), names, defaults


def _result_datetime(dialect: Dialect) -> Callable[[Any], Any]:
    process = result_processor(dialect, o.c.created_at)
    assert process is not None  # noqa: S101 - UTCDateTime always converts
    return process
