"""What was tried (issue 25 item 4, ADR 021): the attempt log read newest first, page by
page, and each endpoint's health over a window (attempts, success rate, p50/p95 duration).

Both read `webhook_attempts` only, through its indexes: (endpoint_id, at) for one
endpoint, (event_id) for one event, (at) for everything recent. A page is keyset-paged on
(at, id), newest first: the cursor is the last row's id, whose `at` is looked up once by
primary key, so page 1,000 costs what page 1 costs. Nothing here reads a secret: the
table holds none (the response excerpt went through the redactor before it was written).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, case, func, or_, select

from outbound.ports import Outcome
from outbox.schema_webhooks import webhook_attempts_table as a

__all__ = ["MAX_LIMIT", "AttemptRow", "Health", "attempts", "endpoint_health"]

MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: int
    delivery_id: int
    endpoint_id: str
    event_id: str
    webhook_id: str
    attempt: int
    at: datetime
    duration_ms: int
    outcome: str
    status_code: int | None
    error: str | None
    response_excerpt: str | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Health:
    """One endpoint's attempts in a window. `success_rate` is delivered / attempts (None
    with no attempt); p50/p95 are nearest-rank percentiles of duration_ms (the smallest
    duration with at least that share of the attempts at or below it)."""

    attempts: int
    delivered: int
    success_rate: float | None
    p50_ms: int | None
    p95_ms: int | None


def attempts(
    conn: Connection,
    *,
    endpoint_id: str | None = None,
    event_id: str | None = None,
    failed_only: bool = False,
    since: datetime | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[AttemptRow]:
    """Attempts newest first (by `at`, then id); `before_id`: the last row of the page
    before. `failed_only`: every attempt that did not deliver (failed, throttled, gone,
    refused)."""
    query = select(a).order_by(a.c.at.desc(), a.c.id.desc()).limit(max(1, min(limit, MAX_LIMIT)))
    if endpoint_id is not None:
        query = query.where(a.c.endpoint_id == endpoint_id)
    if event_id is not None:
        query = query.where(a.c.event_id == event_id)
    if failed_only:
        query = query.where(a.c.outcome != Outcome.DELIVERED.value)
    if since is not None:
        query = query.where(a.c.at >= since)
    if before_id is not None:
        query = _before(conn, query, before_id)
    return [AttemptRow(**row._mapping) for row in conn.execute(query)]


def _before(conn: Connection, query: Select[Any], before_id: int) -> Select[Any]:
    """Rows after the cursor in (at desc, id desc); a pruned cursor row pages by id."""
    at = conn.execute(select(a.c.at).where(a.c.id == before_id)).scalar_one_or_none()
    if at is None:
        return query.where(a.c.id < before_id)
    return query.where(or_(a.c.at < at, and_(a.c.at == at, a.c.id < before_id)))


# Percentiles by nearest rank, in integers (portable: no CEIL on SQLite, no PERCENTILE_CONT
# on SQLite or as an aggregate on MariaDB): the rank r is the one with r*100 >= p*n and
# (r-1)*100 < p*n.
_PERCENTILES = (50, 95)


def endpoint_health(
    conn: Connection,
    since: datetime,
    now: datetime,
    *,
    endpoint_ids: list[str] | None = None,
) -> dict[str, Health]:
    """Each endpoint with attempts in [since, now): counts and percentiles, all in SQL.

    How it scales: the window is an index range, (at) for every endpoint or (endpoint_id,
    at) for the ones asked for, so the rows read are the window's, not the table's (1M
    attempts kept for 30 days are ~1,400 an hour); the database counts them and ranks
    them per endpoint by duration (one window-function sort of the window's rows), and
    returns one row per endpoint for the counts and two for the percentiles."""
    window = and_(a.c.at >= since, a.c.at < now)
    if endpoint_ids is not None:
        if not endpoint_ids:
            return {}
        window = and_(window, a.c.endpoint_id.in_(endpoint_ids))
    delivered = func.sum(case((a.c.outcome == Outcome.DELIVERED.value, 1), else_=0))
    counts = select(a.c.endpoint_id, func.count().label("n"), delivered.label("ok")).where(window)
    totals = {
        row.endpoint_id: (int(row.n), int(row.ok or 0))
        for row in conn.execute(counts.group_by(a.c.endpoint_id))
    }
    ranked = (
        select(
            a.c.endpoint_id,
            a.c.duration_ms,
            func.row_number()
            .over(partition_by=a.c.endpoint_id, order_by=(a.c.duration_ms, a.c.id))
            .label("r"),
            func.count().over(partition_by=a.c.endpoint_id).label("n"),
        )
        .where(window)
        .subquery()
    )
    wanted = or_(
        *(
            and_(ranked.c.r * 100 >= p * ranked.c.n, (ranked.c.r - 1) * 100 < p * ranked.c.n)
            for p in _PERCENTILES
        )
    )
    marks: dict[str, dict[int, int]] = {}
    for row in conn.execute(select(ranked).where(wanted)):
        for p in _PERCENTILES:
            if row.r * 100 >= p * row.n and (row.r - 1) * 100 < p * row.n:
                marks.setdefault(row.endpoint_id, {})[p] = int(row.duration_ms)
    found: dict[str, Health] = {}
    for endpoint_id, (n, ok) in totals.items():
        mark = marks.get(endpoint_id, {})
        found[endpoint_id] = Health(n, ok, ok / n if n else None, mark.get(50), mark.get(95))
    return found
