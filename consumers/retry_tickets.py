"""Retry tickets: an operator's `outbox failed retry` is the only thing that lets a job do
what it would not do by itself (re-send an e-mail whose earlier outcome is unknown).

The retry copy carries `x-failed-job-id`, but a header is only a claim: anyone who can
produce to Kafka can write one. So `outbox failed retry` leaves a ticket in
`failed_job_retries` (the failed job's id, group, job and event id, status `retrying`) in
the transaction that deletes the failed row and writes the copy. A job asks
`ctx.retried_failed_id(conn)`; the header is honoured only when

- the record came on the group's own retry topic (elsewhere `consumers.incoming` drops the
  retry headers before any job sees them),
- its value names a ticket that exists, for this group, this job and this event id,
- and that ticket is still `retrying`: honouring it makes it `honoured` in the job's own
  transaction, so one operator's retry re-sends at most once.

Anything else is treated as a first delivery and logged (`consumer_retry_header_ignored`,
with the reason, never the header's raw value).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, delete, insert, select, update

from consumers.headers import Headers
from outbox.schema import failed_job_retries_table

__all__ = ["HONOURED", "RETRYING", "honour", "issue", "prune"]

log = structlog.get_logger("consumers.retry_tickets")

t = failed_job_retries_table
RETRYING, HONOURED = "retrying", "honoured"
MAX_ID_DIGITS = 18


def issue(conn: Connection, rows: Sequence[Any], now: datetime) -> None:
    """Tickets for failed rows being retried (in the retry's transaction). A ticket left
    under the same id is replaced: SQLite (and MySQL after a restart) may give a deleted
    failed row's id to a new one, and the event id tells the two retries apart."""
    if not rows:
        return
    conn.execute(delete(t).where(t.c.failed_job_id.in_([row.id for row in rows])))
    conn.execute(
        insert(t),
        [
            {
                "failed_job_id": row.id,
                "group_name": row.group_name,
                "job_name": row.job_name,
                "event_id": row.event_id,
                "status": RETRYING,
                "retried_at": now,
                "honoured_at": None,
            }
            for row in rows
        ],
    )


def honour(
    conn: Connection, who: tuple[str, str, str], headers: dict[str, str], now: datetime
) -> int | None:
    """The failed job's id if this message (`who`: group, job, event id) is an operator's
    retry the database knows of (the ticket is now honoured, in `conn`'s transaction);
    else None."""
    group, job, event_id = who
    value = headers.get(Headers.FAILED_ID)
    if value is None:
        return None
    if not (value.isdigit() and len(value) <= MAX_ID_DIGITS):
        return _ignored("not_an_id", group, job, event_id)
    failed_id = int(value)
    ticket = conn.execute(
        select(t.c.group_name, t.c.job_name, t.c.event_id, t.c.status).where(
            t.c.failed_job_id == failed_id
        )
    ).one_or_none()
    problem = _problem(ticket, group, job, event_id)
    if problem is not None:
        return _ignored(problem, group, job, event_id)
    taken = conn.execute(
        update(t)
        .where(t.c.failed_job_id == failed_id, t.c.status == RETRYING)
        .values(status=HONOURED, honoured_at=now)
    )
    if taken.rowcount != 1:
        return _ignored("already_honoured", group, job, event_id)
    return failed_id


def _problem(ticket: Any, group: str, job: str, event_id: str) -> str | None:
    if ticket is None:
        return "no_such_retry"
    if ticket.group_name != group:
        return "other_group"
    if ticket.job_name is not None and ticket.job_name != job:
        return "other_job"
    if ticket.event_id is not None and ticket.event_id != event_id:
        return "other_event"
    if ticket.status != RETRYING:
        return "already_honoured"
    return None


def _ignored(reason: str, group: str, job: str, event_id: str) -> int | None:
    # Never the header's value: it is hostile text.
    log.warning(
        "consumer_retry_header_ignored", reason=reason, group=group, job=job, event_id=event_id
    )
    return None  # treated as a first delivery


def prune(conn: Connection, before: datetime, *, chunk: int = 5000) -> int:
    """Remove tickets of retries made before `before` (honoured or not: a retry copy that
    old has been consumed or dropped long since)."""
    ids = list(
        conn.execute(
            select(t.c.failed_job_id).where(t.c.retried_at < before).limit(chunk)
        ).scalars()
    )
    if not ids:
        return 0
    return int(conn.execute(delete(t).where(t.c.failed_job_id.in_(ids))).rowcount)
