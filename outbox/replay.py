"""Publish a range again: copies of published (or dead) rows as new pending rows.

A copy keeps the original's event id, topic, key, type, payload and headers, and adds
`x-replay-id` and `ce_replay` (the replay's id) to its headers, plus `x-replay-rerun: true`
when consumers are asked to run their effects again (their inbox key then becomes
`event_id/replay_id`; without it they skip the copy as already seen). Copies go through the
normal relay, in the originals' id order, so per-key order and the shard leases still hold.

A copy keeps its original's CloudEvents time: the original's creation goes in the copy's
`ce_time` header (the relay sends it as ce_time), and when the copy was made in
`x-copied-at`.

Only original rows are selected (not earlier copies). The replay is recorded in `replays`
(running, then done) and in the audit log. Its whole range of originals (first_id..last_id)
is registered before the first copy, under the `outbox:replay-range` lock that each prune
batch takes too, so prune never deletes an original the replay has still to copy; the
replay copies only rows in that range. `copies_first_id..copies_last_id` are its own first
and last copy (other writers' rows may lie between them); prune finds the copies by
primary key and replay id.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, select, update

from outbox.audit import Refused, record
from outbox.envelope import (
    CE_TIME_HEADER,
    COPIED_AT_HEADER,
    canonical_json,
    rfc3339,
    shard_for,
)
from outbox.locks import REPLAY_RANGE_LOCK, exclusive
from outbox.notify import notify
from outbox.schema import OutboxStatus, ReplayStatus
from outbox.schema import outbox_table as o
from outbox.schema import replays_table as replays
from outbox.types import utcnow

__all__ = [
    "ReplayFilter",
    "ReplayPreview",
    "ReplayResult",
    "close_abandoned",
    "list_replays",
    "preview",
    "replay",
]

REPLAY_ID_HEADER = "x-replay-id"
CE_REPLAY_HEADER = "ce_replay"
RERUN_HEADER = "x-replay-rerun"


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    from_id: int | None = None
    to_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    topics: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    # The aggregate type (the `aggregate_type` header the write path stores).
    aggregate: str | None = None
    key: str | None = None
    statuses: tuple[str, ...] = (OutboxStatus.PUBLISHED,)

    def check(self) -> None:
        """Refuse empty or inverted ranges."""
        if self.from_id is not None and self.to_id is not None and self.from_id > self.to_id:
            raise Refused(f"--from-id {self.from_id} is after --to-id {self.to_id}")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise Refused(
                f"--since {self.since.isoformat()} is after --until {self.until.isoformat()}"
            )
        bad = set(self.statuses) - {OutboxStatus.PUBLISHED, OutboxStatus.DEAD}
        if bad or not self.statuses:
            raise Refused("only published or dead rows can be replayed")

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [
            o.c.status.in_(self.statuses),
            o.c.replay_id.is_(None),
        ]
        if self.from_id is not None:
            clauses.append(o.c.id >= self.from_id)
        if self.to_id is not None:
            clauses.append(o.c.id <= self.to_id)
        if self.since is not None:
            clauses.append(o.c.created_at >= self.since)
        if self.until is not None:
            clauses.append(o.c.created_at <= self.until)
        if self.topics:
            clauses.append(o.c.topic.in_(self.topics))
        if self.types:
            clauses.append(o.c.type.in_(self.types))
        if self.aggregate is not None:
            # Headers are canonical JSON (compact, sorted keys): an exact substring.
            needle = canonical_json({"aggregate_type": self.aggregate})[1:-1]
            clauses.append(o.c.headers.contains(needle, autoescape=True))
        if self.key is not None:
            clauses.append(o.c.key == self.key)
        return clauses

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("since", "until"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return {k: v for k, v in data.items() if v not in (None, ())}


@dataclass(frozen=True, slots=True)
class ReplayPreview:
    count: int
    first_id: int | None
    last_id: int | None
    by_topic: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def preview(conn: Connection, flt: ReplayFilter) -> ReplayPreview:
    """What a replay with this filter would copy (count, first/last id, per topic)."""
    by_topic: dict[str, int] = {}
    first = last = None
    for topic, count, lo, hi in conn.execute(
        select(o.c.topic, func.count(), func.min(o.c.id), func.max(o.c.id))
        .where(*flt.where())
        .group_by(o.c.topic)
    ):
        by_topic[topic] = int(count)
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    return ReplayPreview(sum(by_topic.values()), first, last, dict(sorted(by_topic.items())))


@dataclass(slots=True)
class ReplayResult:
    replay_id: str
    count: int = 0
    first_id: int | None = None
    last_id: int | None = None
    copies_first_id: int | None = None
    copies_last_id: int | None = None
    rerun: bool = False
    by_topic: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_SOURCE_COLUMNS = (
    o.c.id,
    o.c.event_id,
    o.c.topic,
    o.c.key,
    o.c.type,
    o.c.payload,
    o.c.headers,
    o.c.created_at,
)


def _copy(row: Any, replay_id: str, rerun: bool, shards: int, now: datetime) -> dict[str, Any]:
    try:
        headers = json.loads(row.headers) if row.headers else {}
    except ValueError:
        headers = {}
    if not isinstance(headers, dict):
        headers = {}
    headers.setdefault(CE_TIME_HEADER, rfc3339(row.created_at))
    headers[COPIED_AT_HEADER] = rfc3339(now)
    headers[REPLAY_ID_HEADER] = replay_id
    headers[CE_REPLAY_HEADER] = replay_id
    if rerun:
        headers[RERUN_HEADER] = "true"
    return {
        "event_id": row.event_id,
        "topic": row.topic,
        "key": row.key,
        "shard": shard_for(row.key, shards),
        "type": row.type,
        "payload": row.payload,
        "headers": canonical_json(headers),
        "created_at": now,
        "available_at": now,
        "attempts": 0,
        "status": OutboxStatus.PENDING,
        "replay_of": row.id,
        "replay_id": replay_id,
    }


def replay(
    engine: Engine,
    flt: ReplayFilter,
    *,
    actor: str,
    reason: str | None,
    shards: int,
    rerun: bool = False,
    rate: float | None = None,
    chunk: int = 1000,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ReplayResult:
    """Insert the copies, `chunk` rows per transaction, at most `rate` rows/s."""
    flt.check()
    if rate is not None:
        chunk = max(1, min(chunk, int(rate)))
    result = ReplayResult(str(uuid.uuid4()), rerun=rerun)
    floor, first, last = _register(engine, flt, result, actor, reason, rerun, clock)
    after = first - 1
    last_copy = floor
    started = time.monotonic()
    try:
        while first <= after + 1 <= last:
            with engine.begin() as conn:
                rows = conn.execute(
                    select(*_SOURCE_COLUMNS)
                    .where(*flt.where(), o.c.id > after, o.c.id <= last)
                    .order_by(o.c.id)
                    .limit(chunk)
                ).all()
                if not rows:
                    break
                stamp = clock()
                conn.execute(
                    o.insert(), [_copy(r, result.replay_id, rerun, shards, stamp) for r in rows]
                )
                notify(conn)
                lo, hi = conn.execute(
                    select(func.min(o.c.id), func.max(o.c.id)).where(
                        o.c.id > last_copy, o.c.replay_id == result.replay_id
                    )
                ).one()
                last_copy = hi
                if result.copies_first_id is None:
                    result.copies_first_id = lo
                result.copies_last_id = hi
                after = rows[-1].id
                result.count += len(rows)
                result.first_id = rows[0].id if result.first_id is None else result.first_id
                result.last_id = after
                for r in rows:
                    result.by_topic[r.topic] = result.by_topic.get(r.topic, 0) + 1
                conn.execute(
                    update(replays)
                    .where(replays.c.id == result.replay_id)
                    .values(count=result.count, copies_first_id=result.copies_first_id)
                )
            if progress is not None:
                progress(result.count)
            if rate is not None:
                ahead = result.count / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM, an error): the copies so far stay and go out; the
        # replay is closed as interrupted, so prune is held back only until they are out.
        _close(engine, result, ReplayStatus.INTERRUPTED, actor, reason, flt, rerun, clock)
        raise
    _close(engine, result, ReplayStatus.DONE, actor, reason, flt, rerun, clock)
    return result


def _register(  # noqa: PLR0917 - the replay's whole record
    engine: Engine,
    flt: ReplayFilter,
    result: ReplayResult,
    actor: str,
    reason: str | None,
    rerun: bool,
    clock: Callable[[], datetime],
) -> tuple[int, int, int]:
    """Record the running replay with the whole id range it will copy, under the range lock
    prune batches take: once this commits, no prune batch deletes a row of the range.
    Returns (the highest id before any copy, the first and the last original to copy)."""
    with exclusive(engine, REPLAY_RANGE_LOCK) as conn:
        # Any copy gets an id above every id visible now: the lower bound of the copies.
        floor = conn.execute(select(func.max(o.c.id))).scalar() or 0
        lo, hi = conn.execute(select(func.min(o.c.id), func.max(o.c.id)).where(*flt.where())).one()
        conn.execute(
            replays.insert().values(
                id=result.replay_id,
                created_at=clock(),
                actor=actor[:128],
                reason=reason,
                filter=canonical_json(flt.as_dict()),
                count=0,
                first_id=lo,
                last_id=hi,
                copies_first_id=floor + 1,
                rerun=rerun,
                status=ReplayStatus.RUNNING,
            )
        )
    # Nothing selected: an empty range (first > last), the loop does not run.
    return floor, (lo or 1), (hi or 0)


def _close(  # noqa: PLR0917 - the replay's whole record
    engine: Engine,
    result: ReplayResult,
    status: str,
    actor: str,
    reason: str | None,
    flt: ReplayFilter,
    rerun: bool,
    clock: Callable[[], datetime],
) -> None:
    """Done (or interrupted): the originals actually copied and the replay's own copies."""
    with engine.begin() as conn:
        done = clock()
        conn.execute(
            update(replays)
            .where(replays.c.id == result.replay_id)
            .values(
                status=status,
                finished_at=done,
                count=result.count,
                first_id=result.first_id,
                last_id=result.last_id,
                copies_first_id=result.copies_first_id,
                copies_last_id=result.copies_last_id,
            )
        )
        record(
            conn,
            at=done,
            actor=actor,
            action="replay",
            target=f"replay:{result.replay_id}",
            reason=reason,
            details={
                "filter": flt.as_dict(),
                "count": result.count,
                "first_id": result.first_id,
                "last_id": result.last_id,
                "rerun": rerun,
                "status": status,
            },
        )


def list_replays(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest replays first, with their state."""
    rows = conn.execute(select(replays).order_by(replays.c.created_at.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


def close_abandoned(
    conn: Connection, replay_id: str, *, actor: str, reason: str | None, now: datetime
) -> dict[str, Any]:
    """Close a replay left `running` by a process that died (SIGKILL, a lost machine), so
    that prune is held back only until the copies it made are out. Refused for any other
    replay: a finished one is closed already, and one still running would go on copying."""
    row = conn.execute(select(replays).where(replays.c.id == replay_id)).one_or_none()
    if row is None:
        raise Refused(f"no replay {replay_id!r} (see `outbox replays list`)")
    if row.status != ReplayStatus.RUNNING:
        raise Refused(f"replay {replay_id} is {row.status}, not running: nothing to close")
    made = conn.execute(
        select(func.count(), func.max(o.c.id)).where(
            o.c.replay_id == replay_id, o.c.id >= (row.copies_first_id or 0)
        )
    ).one()
    closed = conn.execute(
        update(replays)
        .where(replays.c.id == replay_id, replays.c.status == ReplayStatus.RUNNING)
        .values(
            status=ReplayStatus.INTERRUPTED, finished_at=now, count=made[0], copies_last_id=made[1]
        )
    ).rowcount
    if not closed:
        raise Refused(f"replay {replay_id} changed meanwhile; look again")
    details = {"copies": made[0], "copies_last_id": made[1], "was": ReplayStatus.RUNNING.value}
    record(
        conn,
        at=now,
        actor=actor,
        action="replay-close",
        target=f"replay:{replay_id}",
        reason=reason,
        details=details,
    )
    return {"replay_id": replay_id, "status": ReplayStatus.INTERRUPTED.value, **details}
