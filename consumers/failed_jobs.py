"""Failed jobs for operators: list, show, retry, forget, flush.

`flush` is the housekeeping of failed jobs (ADR 015 says where it comes from):
it deletes the chosen rows in chunks of their own transactions, so a table of millions
never holds one long transaction or lock, and writes one audit row per chunk in that
chunk's transaction (each says exactly which ids went). Rows of a `review_before_retry`
group are kept unless the operator includes them by name of the option: money's failures
are evidence until someone has looked at them.

A retry puts the message on its group's own retry topic (other groups see nothing), as a
new first attempt: the failed row and the job's inbox attempts are removed in the same
transaction, so the attempts start from zero. If it fails again, it comes back as a new row.
The copy carries `x-failed-job-id`: a job can tell an operator's retry from its own (the
reminder job sends again only then when an earlier outcome is unknown). A header alone is
not believed: the same transaction leaves a ticket (consumers.retry_tickets) that the job's
`ctx.retried_failed_id(conn)` checks and honours once.

A group declared `review_before_retry` (payments) holds money: its failed jobs are retried
only with a `Review` (who looked at them and why), and each such retry is written to the
audit log in the same transaction. Without one, `retry` raises `ReviewRequired` and retries
nothing at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, delete, func, select

from consumers import retry_tickets, store
from consumers._internal.failure_records import copy_headers, origin_header
from consumers.errors import ConsumerError
from consumers.groups import Group
from consumers.headers import Headers
from consumers.incoming import inbox_key
from outbox.audit import record as audit
from outbox.envelope import Envelope
from outbox.schema import failed_jobs_table
from outbox.types import utcnow
from outbox.writer import append

__all__ = [
    "FailedFilter",
    "Flushed",
    "Review",
    "ReviewRequired",
    "count_failed",
    "flush",
    "forget",
    "list_failed",
    "needing_review",
    "retry",
    "show",
]

f = failed_jobs_table
SUMMARY = (
    f.c.id,
    f.c.group_name,
    f.c.job_name,
    f.c.event_id,
    f.c.type,
    f.c.topic,
    f.c.kafka_partition,
    f.c.kafka_offset,
    f.c.reason,
    f.c.exception_class,
    f.c.exception_message,
    f.c.attempts,
    f.c.failed_at,
)


@dataclass(frozen=True)
class FailedFilter:
    """Which failed rows an operator means: ids, an id range, a time window, a group, a
    job, an exception class (its name as stored, e.g. `ReminderNotSent`)."""

    ids: tuple[int, ...] = ()
    id_range: tuple[int, int] | None = None
    since: datetime | None = None
    group: str | None = None
    job: str | None = None
    exception: str | None = None
    # Failed before this time (flush --older-than).
    before: datetime | None = None
    exclude_groups: tuple[str, ...] = ()

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.ids:
            query = query.where(f.c.id.in_(self.ids))
        if self.id_range:
            query = query.where(f.c.id.between(*self.id_range))
        if self.since:
            query = query.where(f.c.failed_at >= self.since)
        if self.group:
            query = query.where(f.c.group_name == self.group)
        if self.job:
            query = query.where(f.c.job_name == self.job)
        if self.exception:
            query = query.where(f.c.exception_class == self.exception)
        if self.before:
            query = query.where(f.c.failed_at < self.before)
        if self.exclude_groups:
            query = query.where(f.c.group_name.not_in(self.exclude_groups))
        return query


@dataclass(frozen=True)
class Review:
    """Who reviewed failed jobs before retrying them, and why the retry is right now."""

    reviewed_by: str
    reason: str

    def __post_init__(self) -> None:
        if not 0 < len(self.reviewed_by.strip()) <= 128:
            raise ValueError("--reviewed-by: a name of 1 to 128 characters")
        if not 0 < len(self.reason.strip()) <= 1000:
            raise ValueError("--reason: say why, in 1 to 1000 characters")


class ReviewRequired(ConsumerError):
    """Failed jobs of a review_before_retry group were chosen without a review."""

    def __init__(self, ids: list[int], groups: list[str]) -> None:
        shown = ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
        super().__init__(
            f"failed job(s) {shown} belong to {', '.join(groups)}, whose jobs move money: "
            "review them (`outbox failed show ID`) and retry with --reviewed-by NAME "
            "--reason TEXT; nothing was retried"
        )
        self.ids = ids


def needing_review(
    conn: Connection, which: FailedFilter, groups: dict[str, Group], limit: int = 1000
) -> list[int]:
    """Ids among the chosen rows whose group wants a review before a retry."""
    reviewed = [name for name, group in groups.items() if group.review_before_retry]
    if not reviewed:
        return []
    query = which.apply(select(f.c.id)).where(f.c.group_name.in_(reviewed))
    return list(conn.execute(query.order_by(f.c.id).limit(limit)).scalars())


def list_failed(conn: Connection, which: FailedFilter, limit: int = 100) -> list[dict[str, Any]]:
    rows = conn.execute(which.apply(select(*SUMMARY)).order_by(f.c.id).limit(limit))
    return [dict(row._mapping) for row in rows]


def count_failed(conn: Connection, which: FailedFilter) -> int:
    return int(conn.execute(which.apply(select(func.count()).select_from(f))).scalar_one())


def show(conn: Connection, failed_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(f).where(f.c.id == failed_id)).one_or_none()
    return dict(row._mapping) if row is not None else None


def retry(
    conn: Connection,
    which: FailedFilter,
    groups: dict[str, Group],
    *,
    shards: int,
    chunk: int = 500,
    review: Review | None = None,
) -> list[int]:
    """Send the chosen failed messages back through their groups' retry topics; returns the
    ids retried. Rows of a group this process does not know are left alone (and reported).
    Rows of a review_before_retry group need `review` (else ReviewRequired, nothing done);
    with a review every retried row is audited."""
    if review is None:
        waiting = needing_review(conn, which, groups)
        if waiting:
            names = sorted({g.name for g in groups.values() if g.review_before_retry})
            raise ReviewRequired(waiting, names)
    retried: list[int] = []
    last = 0
    while True:
        rows = conn.execute(
            which.apply(select(f)).where(f.c.id > last).order_by(f.c.id).limit(chunk)
        ).all()
        if not rows:
            return retried
        last = rows[-1].id
        known = [row for row in rows if row.group_name in groups]
        append(conn, [_retry_envelope(row, groups[row.group_name]) for row in known], shards=shards)
        # The attempts start from one again: the inbox rows go, one DELETE per group and
        # job (a statement per row made a 100k-row retry spend 80% of its time here).
        attempts: dict[str, list[tuple[str, str]]] = {}
        for row in known:
            if row.job_name and row.event_id:
                headers = json.loads(row.headers or "{}")
                key = (row.job_name, inbox_key(row.event_id, headers))
                attempts.setdefault(row.group_name, []).append(key)
        for group_name, keys in attempts.items():
            store.unclaim(conn, group_name, keys)
        retry_tickets.issue(conn, known, utcnow())
        conn.execute(delete(f).where(f.c.id.in_([row.id for row in known])))
        if review is not None:
            _audit_retries(conn, known, review)
        retried += [row.id for row in known]


def _audit_retries(conn: Connection, rows: Sequence[Any], review: Review) -> None:
    at = utcnow()
    for row in rows:
        audit(
            conn,
            at=at,
            actor=review.reviewed_by.strip(),
            action="failed.retry",
            target=f"failed_job:{row.id}",
            reason=review.reason.strip(),
            details={
                "group": row.group_name,
                "job": row.job_name,
                "event_id": row.event_id,
                "attempts": row.attempts,
                "failure": row.reason,
                "exception_class": row.exception_class,
            },
        )


def _retry_envelope(row: Any, group: Group) -> Envelope:
    headers = copy_headers(json.loads(row.headers or "{}"))
    headers[Headers.ATTEMPT] = "1"
    # An operator asked for this run: a job may do what it would not do by itself (send a
    # reminder whose earlier outcome is unknown).
    headers[Headers.FAILED_ID] = str(row.id)
    headers[Headers.ORIGIN] = origin_header(row.topic, row.kafka_partition, row.kafka_offset)
    if row.job_name:
        headers[Headers.JOB] = row.job_name
    payload = row.payload
    if row.payload_encoding != "utf-8":
        headers["x-payload-encoding"] = row.payload_encoding
    return Envelope(
        event_id=row.event_id or f"failed-{row.id}",
        topic=group.retry_topic,
        key=row.message_key or row.event_id or str(row.id),
        type=row.type or "unknown",
        payload=payload,
        occurred_at=utcnow(),
        headers=headers,
    )


def forget(conn: Connection, which: FailedFilter) -> int:
    """Delete the chosen failed rows (their DLQ copies stay in Kafka)."""
    ids: Sequence[int] = conn.execute(which.apply(select(f.c.id))).scalars().all()
    for start in range(0, len(ids), 500):
        conn.execute(delete(f).where(f.c.id.in_(ids[start : start + 500])))
    return len(ids)


@dataclass(frozen=True)
class Flushed:
    """What a flush deleted (or, dry, would delete): the count per (group, job)."""

    deleted: int
    by_job: dict[str, int]
    kept_for_review: int
    dry_run: bool


def flush(
    engine: Engine,
    which: FailedFilter,
    groups: dict[str, Group],
    *,
    actor: str,
    reason: str | None,
    include_reviewed: bool = False,
    dry_run: bool = False,
    chunk: int = 5000,
) -> Flushed:
    """Delete the chosen failed rows, oldest first, `chunk` ids per transaction, each chunk
    audited in its own transaction. Without `include_reviewed` the rows of groups that want
    a review before a retry are kept (and counted)."""
    if not 1 <= chunk <= 50_000:
        raise ValueError(f"chunk must be 1..50000, got {chunk}")
    reviewed = tuple(sorted(n for n, g in groups.items() if g.review_before_retry))
    chosen = which
    if reviewed and not include_reviewed:
        chosen = replace(which, exclude_groups=reviewed)
    with engine.connect() as conn:
        by_job = _by_job(conn, chosen)
        kept = count_failed(conn, which) - sum(by_job.values()) if chosen is not which else 0
    if dry_run:
        return Flushed(sum(by_job.values()), by_job, kept, dry_run=True)
    deleted, last = 0, 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    chosen.apply(select(f.c.id)).where(f.c.id > last).order_by(f.c.id).limit(chunk)
                ).scalars()
            )
            if not ids:
                break
            gone = conn.execute(delete(f).where(f.c.id.in_(ids))).rowcount
            audit(
                conn,
                at=utcnow(),
                actor=actor,
                action="failed.flush",
                target=f"failed_jobs:{ids[0]}-{ids[-1]}",
                reason=reason,
                details={"deleted": gone, "filter": _described(chosen)},
            )
        deleted += gone
        last = ids[-1]
    return Flushed(deleted, by_job, kept, dry_run=False)


def _by_job(conn: Connection, which: FailedFilter) -> dict[str, int]:
    query = which.apply(select(f.c.group_name, f.c.job_name, func.count()).select_from(f))
    rows = conn.execute(query.group_by(f.c.group_name, f.c.job_name)).all()
    return {f"{g}/{j or '-'}": int(n) for g, j, n in sorted(rows, key=lambda r: (r[0], r[1] or ""))}


def _described(which: FailedFilter) -> dict[str, Any]:
    """The filter as the audit log keeps it (times as ISO text, unset fields left out)."""
    shown = {k: v for k, v in which.__dict__.items() if v not in (None, ())}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in shown.items()}
