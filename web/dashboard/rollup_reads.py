"""Reads of the per-minute rollups (outbox.rollups) behind the dashboard's charts: one
GROUP BY over a primary-key range per chart, whatever the span (an hour reads minute rows,
a day quarter-hour rows, 14 days 4-hour rows: at most 96 rows per job)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from outbox.histogram import percentile
from outbox.schema_rollups import BUCKETS, rollups_table, run_columns, wait_columns

__all__ = [
    "SPANS",
    "Point",
    "Span",
    "Sums",
    "Totals",
    "series",
    "series_by_kind",
    "span_named",
    "totals_by_job",
]

t = rollups_table


@dataclass(frozen=True, slots=True)
class Span:
    name: str
    label: str
    seconds: int
    grain: int  # which rows it reads (60: minute, 900: quarter hour, 14400: 4-hour rows)
    step: int  # seconds per point of the chart


SPANS = (
    Span("1h", "last hour", 3600, 60, 60),
    Span("24h", "last 24 h", 86400, 900, 900),
    Span("14d", "last 14 days", 14 * 86400, 4 * 3600, 4 * 3600),
)


def span_named(name: str | None) -> Span:
    """The span a query parameter names (the last hour when it names none it knows)."""
    return next((s for s in SPANS if s.name == name), SPANS[0])


@dataclass(frozen=True, slots=True)
class Sums:
    """Counts and summed histograms over some rollup rows."""

    published: int
    handled: int
    failed: int
    retried: int
    wait: tuple[int, ...]
    run: tuple[int, ...]

    def wait_p(self, q: float) -> float | None:
        return percentile(self.wait, q)

    def run_p(self, q: float) -> float | None:
        return percentile(self.run, q)


@dataclass(frozen=True, slots=True)
class Point(Sums):
    """One point of a chart: its interval's sums."""

    at: int  # interval start, epoch seconds


@dataclass(frozen=True, slots=True)
class Totals(Sums):
    """A span's sums for one (group, job), or one relay topic (job "")."""

    group: str
    job: str


def _where(
    span: Span, now: datetime, kind: str | None, group: str | None, job: str | None
) -> tuple[list[ColumnElement[bool]], int]:
    end = int(now.timestamp()) // span.step * span.step + span.step
    start = end - span.seconds
    where = [t.c.grain == span.grain, t.c.at >= start, t.c.at < end]
    if kind is not None:
        where.append(t.c.kind == kind)
    if group is not None:
        where.append(t.c.group_name == group)
    if job is not None:
        where.append(t.c.job_name == job)
    return where, start


_SUMS = [
    func.sum(t.c[name]).label(name)
    for name in ("published", "handled", "failed", "retried", *wait_columns, *run_columns)
]


def _counts(row: Any) -> dict[str, Any]:
    """The sums of a row whose last columns are `_SUMS` (read by position: by name, 64
    lookups a row cost more than the query)."""
    v = [int(x or 0) for x in tuple(row)[-len(_SUMS) :]]
    return {
        "published": v[0],
        "handled": v[1],
        "failed": v[2],
        "retried": v[3],
        "wait": tuple(v[4 : 4 + BUCKETS]),
        "run": tuple(v[4 + BUCKETS :]),
    }


def series(
    conn: Connection,
    span: Span,
    now: datetime,
    *,
    kind: str = "job",
    group: str | None = None,
    job: str | None = None,
) -> list[Point]:
    """Every point of the span, oldest first (an interval with no rows is all zeros)."""
    return series_by_kind(conn, span, now, kinds=(kind,), group=group, job=job)[kind]


def series_by_kind(
    conn: Connection,
    span: Span,
    now: datetime,
    *,
    kinds: tuple[str, ...] = ("job", "relay"),
    group: str | None = None,
    job: str | None = None,
) -> dict[str, list[Point]]:
    """`series` for each kind, in one query."""
    where, start = _where(span, now, None, group, job)
    bucket = (t.c.at - t.c.at % span.step).label("bucket")
    rows = conn.execute(
        select(t.c.kind, bucket, *_SUMS)
        .where(*where, t.c.kind.in_(kinds))
        .group_by(t.c.kind, bucket)
    ).all()
    found = {(row.kind, int(row.bucket)): _counts(row) for row in rows}
    empty = {
        "published": 0, "handled": 0, "failed": 0, "retried": 0,
        "wait": (0,) * BUCKETS, "run": (0,) * BUCKETS,
    }  # fmt: skip
    steps = range(start, start + span.seconds, span.step)
    return {k: [Point(at=at, **found.get((k, at), empty)) for at in steps] for k in kinds}


def totals_by_job(
    conn: Connection,
    span: Span,
    now: datetime,
    *,
    kind: str | None = "job",
    group: str | None = None,
) -> list[Totals]:
    """The span's sums per (group, job) (and per relay topic when `kind` is None), busiest
    first."""
    where, _ = _where(span, now, kind, group, None)
    rows = conn.execute(
        select(t.c.group_name, t.c.job_name, *_SUMS)
        .where(*where)
        .group_by(t.c.group_name, t.c.job_name)
    ).all()
    found = [Totals(group=r.group_name, job=r.job_name, **_counts(r)) for r in rows]
    return sorted(found, key=lambda x: (-(x.handled + x.failed + x.published), x.group, x.job))
