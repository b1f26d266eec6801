"""The dashboard's read side for the overview, jobs and waiting pages.

Every figure is bounded in cost, whatever the size of the tables (bench/dashboard.py
measures them on 1M outbox rows, 1M inbox rows and 100k failed jobs):

* counts are capped: `capped_count` counts at most `cap + 1` rows through an index and the
  page shows "10,000+" beyond that; no exact COUNT(*) over a big table on each refresh;
* the oldest pending row is found per shard through (status, shard, id), one row each;
* "published per minute" looks only at the newest RECENT_WINDOW outbox rows (by primary
  key): rows published in the last minute are among the newest unless an old backlog is
  draining, and the page says it is an estimate;
* lists are keyset-paginated (never OFFSET) on an index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, func, or_, select, tuple_

from consumers.heartbeat import STALE_AFTER_BEATS
from consumers.store import looks_like_tenant
from domain.schema import domain_events
from outbox.schema import OutboxStatus
from outbox.schema import failed_jobs_table as failed
from outbox.schema import inbox_table as inbox
from outbox.schema import outbox_table as o
from outbox.schema import worker_heartbeats_table as hb

__all__ = [
    "Capped",
    "capped_count",
    "completed_jobs",
    "delayed_rows",
    "e2e_lag",
    "oldest_pending",
    "pending_by_topic",
    "recent_published",
    "workers",
]

RECENT_WINDOW = 20_000
# Filtered lists of handled messages look at the newest INBOX_WINDOW rows (by handling
# time): a filter that matches little must not walk a million rows. Older ones: the CLI.
INBOX_WINDOW = 100_000
HEARTBEAT_S = 2.0


@dataclass(frozen=True, slots=True)
class Capped:
    value: int
    capped: bool

    def __str__(self) -> str:
        return f"{self.value - 1:,}+" if self.capped else f"{self.value:,}"


def capped_count(conn: Connection, query: Select[Any], cap: int) -> Capped:
    """How many rows `query` (a SELECT of one column) gives, counting at most cap + 1."""
    inner = query.limit(cap + 1).subquery()
    found = int(conn.execute(select(func.count()).select_from(inner)).scalar_one())
    return Capped(found, found > cap)


def oldest_pending(conn: Connection, shards: int) -> datetime | None:
    """created_at of the oldest pending row: one index probe per shard."""
    oldest: datetime | None = None
    for shard in range(shards):
        row = conn.execute(
            select(o.c.created_at)
            .where(o.c.status == OutboxStatus.PENDING, o.c.shard == shard)
            .order_by(o.c.id)
            .limit(1)
        ).first()
        if row is not None and (oldest is None or row.created_at < oldest):
            oldest = row.created_at
    return oldest


def recent_published(conn: Connection, now: datetime) -> int:
    """Rows published in the last minute among the newest RECENT_WINDOW rows (an estimate)."""
    top = conn.execute(select(func.max(o.c.id))).scalar()
    if top is None:
        return 0
    return int(
        conn.execute(
            select(func.count()).where(
                o.c.id > top - RECENT_WINDOW,
                o.c.published_at >= now - timedelta(minutes=1),
            )
        ).scalar_one()
    )


def pending_by_topic(
    conn: Connection, now: datetime, cap: int
) -> tuple[list[dict[str, Any]], bool]:
    """Pending rows per topic with the oldest age, over at most `cap` pending rows."""
    pending = (
        select(o.c.topic, o.c.created_at)
        .where(o.c.status == OutboxStatus.PENDING)
        .limit(cap + 1)
        .subquery()
    )
    rows = conn.execute(
        select(pending.c.topic, func.count(), func.min(pending.c.created_at))
        .group_by(pending.c.topic)
        .order_by(pending.c.topic)
    ).all()
    total = sum(int(r[1]) for r in rows)
    return [
        {"topic": t, "pending": int(n), "oldest_age_s": (now - oldest).total_seconds()}
        for t, n, oldest in rows
    ], total > cap


def delayed_rows(conn: Connection, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
    """Rows waiting for their time among the newest RECENT_WINDOW: delayed dispatches
    (available_at ahead) and retry copies whose x-not-before is ahead."""
    top = conn.execute(select(func.max(o.c.id))).scalar() or 0
    rows = conn.execute(
        select(o.c.id, o.c.topic, o.c.key, o.c.type, o.c.status, o.c.available_at, o.c.headers)
        .where(
            o.c.id > top - RECENT_WINDOW,
            or_(o.c.available_at > now, o.c.topic.like("%.retry")),
        )
        .order_by(o.c.id.desc())
        .limit(limit * 4)
    ).all()
    found = []
    for row in rows:
        headers = _headers(row.headers)
        not_before = _time(headers.get("x-not-before")) or row.available_at
        if not_before <= now:
            continue
        found.append(
            {
                "id": row.id,
                "topic": row.topic,
                "key": row.key,
                "type": row.type,
                "job": headers.get("x-job"),
                "attempt": headers.get("x-attempt"),
                "status": row.status,
                "not_before": not_before,
            }
        )
    return found[:limit]


def _headers(text: str | None) -> dict[str, str]:
    try:
        found = json.loads(text or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def workers(conn: Connection, now: datetime, group: str | None = None) -> list[dict[str, Any]]:
    """Every worker's heartbeat row, with `alive` and its recent jobs decoded."""
    query = select(hb).order_by(hb.c.group_name, hb.c.worker_id).limit(500)
    if group:
        query = query.where(hb.c.group_name == group)
    found = []
    for row in conn.execute(query):
        item = dict(row._mapping)
        age = (now - row.heartbeat_at).total_seconds()
        item["heartbeat_age_s"] = age
        item["alive"] = age < HEARTBEAT_S * STALE_AFTER_BEATS
        item["recent"] = _recent(row.recent)
        item["running_s"] = (
            (now - row.job_started_at).total_seconds() if row.job_started_at else None
        )
        found.append(item)
    return found


def _recent(text: str) -> list[dict[str, Any]]:
    try:
        found = json.loads(text)
    except ValueError:
        return []
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []


def e2e_lag(conn: Connection, now: datetime) -> dict[str, float] | None:
    """Seconds from a domain event's commit to a consumer's handling, over the last 200
    handled messages of the last five minutes that are domain events."""
    recent = conn.execute(
        select(inbox.c.message_id, inbox.c.processed_at)
        .where(inbox.c.processed_at >= now - timedelta(minutes=5))
        .order_by(inbox.c.processed_at.desc())
        .limit(200)
    ).all()
    handled = {r.message_id.split("/")[0]: r.processed_at for r in recent}
    if not handled:
        return None
    lags = sorted(
        max(0.0, (handled[event_id] - occurred).total_seconds())
        for event_id, occurred in conn.execute(
            select(domain_events.c.event_id, domain_events.c.occurred_at).where(
                domain_events.c.event_id.in_(list(handled))
            )
        )
    )
    if not lags:
        return None
    return {"p50_s": lags[len(lags) // 2], "max_s": lags[-1], "samples": float(len(lags))}


@dataclass(frozen=True)
class CompletedFilter:
    group: str | None = None
    job: str | None = None
    state: str | None = None  # done | retrying | failed
    since: datetime | None = None
    # An event id, an aggregate key (its newest 200 outbox rows' event ids), or a tenant id.
    search: str | None = None


def completed_jobs(
    conn: Connection,
    which: CompletedFilter,
    pairs: Sequence[tuple[str, str]],
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Inbox rows, newest first, keyset-paginated on (processed_at, message_id); filtered
    lists within the newest INBOX_WINDOW rows. A search is not bounded by the window: by
    id it is a primary-key lookup, by tenant a walk of ix_inbox_tenant_processed_at; the
    two answers are merged (each is already the newest `limit` after the cursor)."""
    order = (inbox.c.processed_at.desc(), inbox.c.message_id.desc())
    query = select(inbox).order_by(*order)
    if not which.search and (which.group or which.job or which.state or which.since):
        start = inbox_window_start(conn)
        if start is not None:
            query = query.where(inbox.c.processed_at >= start)
    if which.group:
        query = query.where(inbox.c.group_name == which.group)
    if which.job:
        query = query.where(inbox.c.job_name == which.job)
    if which.state:
        query = query.where(inbox.c.status == which.state)
    if which.since:
        query = query.where(inbox.c.processed_at >= which.since)
    if after is not None:
        at, message_id = after
        query = query.where(
            or_(
                inbox.c.processed_at < at,
                and_(inbox.c.processed_at == at, inbox.c.message_id < message_id),
            )
        )
    if not which.search:
        return [dict(r._mapping) for r in conn.execute(query.limit(limit))]
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    chosen = [p for p in pairs if (not which.group or p[0] == which.group)]
    if chosen:
        # The primary key is (group, job, message): name the pairs so that it is used.
        by_id = query.where(
            tuple_(inbox.c.group_name, inbox.c.job_name).in_(chosen),
            inbox.c.message_id.in_(_search_ids(conn, which.search)),
        )
        for r in conn.execute(by_id.limit(limit)):
            found[(r.group_name, r.job_name, r.message_id)] = dict(r._mapping)
    if looks_like_tenant(which.search):
        for r in conn.execute(query.where(inbox.c.tenant_id == which.search).limit(limit)):
            found[(r.group_name, r.job_name, r.message_id)] = dict(r._mapping)
    rows = sorted(found.values(), key=lambda r: (r["processed_at"], r["message_id"]))
    return rows[::-1][:limit]


_window: dict[str, tuple[float, datetime | None]] = {}
WINDOW_CACHE_S = 30.0


def inbox_window_start(conn: Connection) -> datetime | None:
    """processed_at of the INBOX_WINDOW-th newest handled message (None: fewer rows),
    found again every WINDOW_CACHE_S (a walk of 100,000 index entries)."""
    key = str(conn.engine.url)
    cached = _window.get(key)
    if cached is not None and time.monotonic() - cached[0] < WINDOW_CACHE_S:
        return cached[1]
    start = conn.execute(
        select(inbox.c.processed_at)
        .order_by(inbox.c.processed_at.desc())
        .offset(INBOX_WINDOW)
        .limit(1)
    ).scalar()
    _window[key] = (time.monotonic(), start)
    return start


def _search_ids(conn: Connection, text: str) -> list[str]:
    keyed = conn.execute(
        select(o.c.event_id).where(o.c.key == text).order_by(o.c.id.desc()).limit(200)
    ).scalars()
    return [text, *keyed]


def with_durations(
    rows: Iterable[dict[str, Any]], workers_seen: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Add duration_ms where a worker still remembers the job (its last few): for a job
    that is done, its successful run's, never a failed attempt's (a worker remembers each
    attempt, and a failed one may come after the success in another worker's list);
    otherwise its latest attempt's."""
    known: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for w in workers_seen:
        for r in w["recent"]:
            known.setdefault((r.get("job"), r.get("event_id")), []).append(r)
    return [{**row, "duration_ms": _duration(row, known)} for row in rows]


def _duration(row: dict[str, Any], known: dict[tuple[Any, Any], list[dict[str, Any]]]) -> Any:
    runs = known.get((row["job_name"], row["message_id"].split("/")[0]), [])
    if row.get("status") == "done":
        runs = [r for r in runs if r.get("outcome") == "processed"]
    if not runs:
        return None
    latest = max(runs, key=lambda r: (_attempt_no(r.get("attempt")), str(r.get("at") or "")))
    return latest.get("duration_ms")


def _attempt_no(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def failed_count(conn: Connection, cap: int) -> Capped:
    return capped_count(conn, select(failed.c.id), cap)
