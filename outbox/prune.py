"""Retention without harm: delete old published (and, if asked, dead) outbox rows, old inbox
rows and finished job batches, in short primary-key batches.

Never deleted: pending or parked rows; rows newer than the retention or than the consumers'
de-duplication window, whichever is longer (a replay inside the window must still be
recognised as a duplicate); the originals in the id range of an open replay and that
replay's copies. An open replay is one still `running` (its whole range is registered
before its first copy) or with copies not yet published; each batch reads them again
under the lock a replay registers with (`outbox.locks`), so a replay started during a
prune is protected too.

Each batch is its own transaction: select up to `batch_size` ids in primary-key order,
archive those rows if asked, delete them by explicit id list (no range scan under a lock,
so MySQL/MariaDB take no gap locks writers could wait on), commit. On PostgreSQL without an
archive, one statement deletes the batch's primary-key range instead (no gap locks there).
Writers only ever wait for one batch.

On PostgreSQL the outbox is partitioned by id range (`outbox.partitions`, ADR 013): first,
every partition whose rows may all go is emptied with TRUNCATE and dropped, which gives
its space back at once (a DELETE leaves it in the heap and the indexes, and VACUUM can
remove nothing while a long transaction holds the xmin horizon); then the rows left past
retention go batch by batch as above.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, func, not_, or_, select

from outbox import partitions
from outbox.locks import REPLAY_RANGE_LOCK, exclusive
from outbox.schema import OutboxStatus, ReplayStatus
from outbox.schema import inbox_table as inbox
from outbox.schema import job_batches_table as batches
from outbox.schema import outbox_table as o
from outbox.schema import replays_table as replays

__all__ = ["PrunePlan", "PruneResult", "open_replays", "plan", "prune", "read_archive"]


class Sink(Protocol):
    """Where the archive goes (a gzip file opened for writing)."""

    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class OpenReplay:
    id: str
    first_id: int | None
    last_id: int | None
    copies_first_id: int | None
    copies_last_id: int | None


@dataclass(frozen=True, slots=True)
class PrunePlan:
    now: datetime
    # Outbox rows must be older than this (the longer of retention and dedup window).
    cutoff: datetime
    # Inbox rows processed before this go (the dedup window); batches finished before cutoff.
    inbox_cutoff: datetime
    statuses: tuple[str, ...]
    open_replays: tuple[OpenReplay, ...]
    outbox_rows: int = 0
    inbox_rows: int = 0
    batch_rows: int = 0
    retention_extended: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class PruneResult:
    outbox_rows: int = 0
    inbox_rows: int = 0
    batch_rows: int = 0
    batches: int = 0
    largest_batch: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    # PostgreSQL: partitions emptied with TRUNCATE (their rows are counted above too).
    partitions_dropped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_replays(conn: Connection) -> list[OpenReplay]:
    """Replays still running (their whole range of originals is registered when they
    start), or whose copies are not all published yet. Two queries, whatever the number
    of replays: the running ones, and the replay ids of pending or parked copies."""
    unpublished = (
        select(o.c.replay_id)
        .where(
            o.c.status.in_([OutboxStatus.PENDING, OutboxStatus.PARKED]),
            o.c.replay_id.is_not(None),
        )
        .distinct()
    )
    found = []
    for r in conn.execute(
        select(replays)
        .where(or_(replays.c.status == ReplayStatus.RUNNING, replays.c.id.in_(unpublished)))
        .order_by(replays.c.created_at)
    ):
        # A running one is being written (or its process was killed: see coroner).
        last_copy = None if r.status == ReplayStatus.RUNNING else r.copies_last_id
        found.append(OpenReplay(r.id, r.first_id, r.last_id, r.copies_first_id, last_copy))
    return found


def _deletable(p: PrunePlan) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [
        o.c.status.in_(p.statuses),
        o.c.created_at < p.cutoff,
        # A row published after the cutoff (a long outage) is recent for its consumers.
        or_(o.c.published_at.is_(None), o.c.published_at < p.cutoff),
    ]
    for r in p.open_replays:
        if r.first_id is not None and r.last_id is not None:
            clauses.append(not_(o.c.id.between(r.first_id, r.last_id)))
        clauses.append(or_(o.c.replay_id.is_(None), o.c.replay_id != r.id))
    return clauses


def plan(
    conn: Connection,
    now: datetime,
    *,
    older_than: timedelta,
    dedup_window: timedelta,
    include_dead: bool = False,
    count: bool = True,
) -> PrunePlan:
    """What prune would delete; with `count`, how many rows (one scan of the outbox)."""
    keep = max(older_than, dedup_window)
    statuses = (
        (OutboxStatus.PUBLISHED, OutboxStatus.DEAD) if include_dead else (OutboxStatus.PUBLISHED,)
    )
    p = PrunePlan(
        now=now,
        cutoff=now - keep,
        inbox_cutoff=now - dedup_window,
        statuses=statuses,
        open_replays=tuple(open_replays(conn)),
        retention_extended=dedup_window > older_than,
    )
    if not count:
        return p
    outbox_rows = conn.execute(select(func.count()).where(*_deletable(p))).scalar_one()
    inbox_rows = conn.execute(
        select(func.count()).where(inbox.c.processed_at < p.inbox_cutoff)
    ).scalar_one()
    batch_rows = conn.execute(
        select(func.count()).where(batches.c.finished_at < p.cutoff)
    ).scalar_one()
    return replace(
        p, outbox_rows=int(outbox_rows), inbox_rows=int(inbox_rows), batch_rows=int(batch_rows)
    )


ARCHIVE_COLUMNS = list(o.c)


def _archive_line(row: Any) -> bytes:
    data = {c.name: row._mapping[c.name] for c in ARCHIVE_COLUMNS}
    for name, value in data.items():
        if isinstance(value, datetime):
            data[name] = value.isoformat()
    return (json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def read_archive(path: str) -> Iterator[dict[str, Any]]:
    """The rows an archive holds, times as aware datetimes again."""
    times = {"created_at", "available_at", "published_at"}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            for name in times:
                if row.get(name) is not None:
                    row[name] = datetime.fromisoformat(row[name])
            yield row


def _ids_where(conn: Connection, ids: list[int]) -> ColumnElement[bool]:
    if conn.dialect.name == "postgresql":
        from sqlalchemy import BigInteger, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return o.c.id == func.any(bindparam("ids", ids, type_=ARRAY(BigInteger)))
    return o.c.id.in_(ids)


def prune(
    engine: Engine,
    p: PrunePlan,
    *,
    batch_size: int = 10_000,
    archive: Sink | None = None,
    progress: Callable[[int], None] | None = None,
) -> PruneResult:
    """Delete what `p` allows, batch by batch; `archive` (a gzip file) gets each row first."""
    result = PruneResult()
    if archive is None:
        _retire_partitions(engine, p, result)
    after = 0
    one_statement = archive is None and engine.dialect.name == "postgresql"
    while True:
        # Under the lock a replay takes to register its range, the batch reads the open
        # replays again: one that started after the plan is protected from its first row.
        with exclusive(engine, REPLAY_RANGE_LOCK) as conn:
            where = _deletable(replace(p, open_replays=tuple(open_replays(conn))))
            if one_statement:
                counts, last = _delete_batch_pg(
                    conn, where, statuses=p.statuses, after=after, limit=batch_size
                )
            else:
                counts, last = _delete_batch(
                    conn, where, statuses=p.statuses, after=after, limit=batch_size, archive=archive
                )
        if last is None:
            break
        after = last
        deleted = sum(counts.values())
        for status, n in counts.items():
            result.by_status[status] = result.by_status.get(status, 0) + n
        result.outbox_rows += deleted
        result.batches += 1
        result.largest_batch = max(result.largest_batch, deleted)
        if progress is not None:
            progress(result.outbox_rows)
    result.inbox_rows = _prune_by_time(
        engine, inbox.c.processed_at, p.inbox_cutoff, batch_size, result
    )
    result.batch_rows = _prune_by_time(engine, batches.c.finished_at, p.cutoff, batch_size, result)
    return result


def _retire_partitions(engine: Engine, p: PrunePlan, result: PruneResult) -> None:
    """PostgreSQL: whole partitions first (nothing elsewhere). With an archive, rows go one
    batch at a time instead, so that each is written out before it is deleted."""

    def deletable(conn: Connection) -> list[ColumnElement[bool]]:
        return _deletable(replace(p, open_replays=tuple(open_replays(conn))))

    for _, counts in partitions.retire(engine, deletable):
        for status, n in counts.items():
            result.by_status[status] = result.by_status.get(status, 0) + n
            result.outbox_rows += n
        result.partitions_dropped += 1
    partitions.ensure_ahead(engine)


def _delete_batch(
    conn: Connection,
    where: list[ColumnElement[bool]],
    *,
    statuses: tuple[str, ...],
    after: int,
    limit: int,
    archive: Sink | None,
) -> tuple[dict[str, int], int | None]:
    """Select up to `limit` ids after `after`, archive those rows, delete them by id list.
    Returns the deleted rows by status and the last id looked at (None: nothing left)."""
    columns = ARCHIVE_COLUMNS if archive is not None else [o.c.id, o.c.status]
    rows = conn.execute(
        select(*columns).where(*where, o.c.id > after).order_by(o.c.id).limit(limit)
    ).all()
    if not rows:
        return {}, None
    if archive is not None:
        archive.write(b"".join(_archive_line(r) for r in rows))
        archive.flush()
    ids = [r.id for r in rows]
    # The status check again: a row requeued meanwhile is pending now, and stays.
    deleted = conn.execute(delete(o).where(_ids_where(conn, ids), o.c.status.in_(statuses)))
    kept: set[int] = set()
    if deleted.rowcount != len(ids):
        kept = set(conn.execute(select(o.c.id).where(_ids_where(conn, ids))).scalars())
    counts: dict[str, int] = {}
    for r in rows:
        if r.id not in kept:
            counts[r.status] = counts.get(r.status, 0) + 1
    return counts, ids[-1]


def _delete_batch_pg(
    conn: Connection,
    where: list[ColumnElement[bool]],
    *,
    statuses: tuple[str, ...],
    after: int,
    limit: int,
) -> tuple[dict[str, int], int | None]:
    """PostgreSQL: the same batch in one statement, as a primary-key range: the id of the
    batch's last row bounds a range delete that re-checks the conditions (1.5x the rows/s
    of sending an id list, bench/prune.py; PostgreSQL takes no gap locks)."""
    chosen = select(o.c.id).where(*where, o.c.id > after).order_by(o.c.id).limit(limit)
    bound = select(func.max(chosen.subquery().c.id)).scalar_subquery()
    gone = (
        delete(o)
        .where(o.c.id > after, o.c.id <= bound, *where, o.c.status.in_(statuses))
        .returning(o.c.status)
        .cte()
    )
    rows = conn.execute(select(gone.c.status, func.count(), bound).group_by(gone.c.status)).all()
    if not rows:
        # Nothing deleted: either nothing left, or every chosen row changed meanwhile.
        top = conn.execute(select(bound)).scalar()
        return {}, None if top is None else int(top)
    return {status: int(n) for status, n, _ in rows}, int(rows[0][2])


def _prune_by_time(
    engine: Engine, column: Any, cutoff: datetime, batch_size: int, result: PruneResult
) -> int:
    """Delete rows of `column`'s table with column < cutoff, oldest first, about
    `batch_size` per transaction: each batch ends at the time of its batch_size-th row, a
    range on the time index below the cutoff that writers (stamping now) never touch."""
    table = column.table
    total = 0
    while True:
        with engine.begin() as conn:
            bound = conn.execute(
                select(column)
                .where(column < cutoff)
                .order_by(column)
                .offset(batch_size - 1)
                .limit(1)
            ).scalar()
            clause = (
                and_(column < cutoff, column <= bound) if bound is not None else column < cutoff
            )
            deleted = int(conn.execute(delete(table).where(clause)).rowcount)
        total += deleted
        result.batches += 1 if deleted else 0
        result.largest_batch = max(result.largest_batch, deleted)
        if bound is None or not deleted:
            return total
