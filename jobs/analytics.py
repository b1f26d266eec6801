"""record-interaction (per interaction event), sync-tenant-analytics (a tenant's daily
rollup, dispatched per tenant and date; idempotent: it recomputes the day's row) and
sync-analytics (the daily coordinator: one sync-tenant-analytics per approved tenant)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, distinct, func, insert, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from consumers import DoNotRetry, NotVerified, ScheduledJobDue, job, require_match
from domain.analytics import InteractionRecorded
from domain.events import DomainEvent, event
from domain.schema import interactions, tenant_daily_analytics, tenants, visitor_activity
from jobs.config import Context
from jobs.scheduled_scan import tenant_chunks
from outbox.types import utcnow

__all__ = [
    "TenantAnalyticsSyncRequested",
    "analytics_day",
    "record_interaction",
    "rollup",
    "sync_analytics",
    "sync_tenant_analytics",
]


def apply_visitor_counts(conn: Connection, items: list[tuple[tuple[str, str], datetime]]) -> None:
    """A batch's interactions, one upsert row per visitor, in (tenant, visitor) order.

    Every worker takes the visitors' row locks in the same order, once per batch, just
    before its commit: no deadlock between two analytics workers, and no wait longer than
    another batch's last milliseconds (see consumers.middleware.batch_effects)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (tenant_id, visitor_id), seen_at in items:  # sorted by key: rows stay in order
        row = rows.get((tenant_id, visitor_id))
        if row is None:
            rows[(tenant_id, visitor_id)] = {
                "tenant_id": tenant_id,
                "visitor_id": visitor_id,
                "first_seen_at": seen_at,
                "last_seen_at": seen_at,
                "interactions": 1,
            }
        else:
            row["interactions"] += 1
            row["first_seen_at"] = min(row["first_seen_at"], seen_at)
            row["last_seen_at"] = max(row["last_seen_at"], seen_at)
    conn.execute(_upsert(conn.dialect.name), list(rows.values()))


def _upsert(dialect: str) -> Any:
    v = visitor_activity
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(v)
        new = stmt.inserted
        return stmt.on_duplicate_key_update(
            interactions=v.c.interactions + new.interactions,
            first_seen_at=func.least(v.c.first_seen_at, new.first_seen_at),
            last_seen_at=func.greatest(v.c.last_seen_at, new.last_seen_at),
        )
    ins = postgresql.insert(v) if dialect == "postgresql" else sqlite.insert(v)
    new = ins.excluded
    earliest = func.least if dialect == "postgresql" else func.min
    latest = func.greatest if dialect == "postgresql" else func.max
    return ins.on_conflict_do_update(
        index_elements=[v.c.tenant_id, v.c.visitor_id],
        set_={
            "interactions": v.c.interactions + new.interactions,
            "first_seen_at": earliest(v.c.first_seen_at, new.first_seen_at),
            "last_seen_at": latest(v.c.last_seen_at, new.last_seen_at),
        },
    )


@job(
    "record-interaction",
    on=InteractionRecorded,
    group="analytics",
    tries=5,
    backoff=(1, 5, 30),
    timeout_s=10,
    apply_batch=apply_visitor_counts,
)
def record_interaction(event: InteractionRecorded, ctx: Context) -> None:
    """Count the visitor's interaction (the inbox makes a redelivery count once); the
    count is applied with the batch's others (apply_visitor_counts). Tenant, visitor and
    time come from the interaction's row (its key), which the record must agree with."""
    i = interactions
    row = ctx.connection.execute(
        select(i.c.tenant_id, i.c.visitor_id, i.c.kind, i.c.occurred_at).where(i.c.id == ctx.key)
    ).one_or_none()
    if row is None:
        raise NotVerified(f"interaction {ctx.key[:64]!r} does not exist: nothing counted")
    claims = {"tenant_id": event.tenant_id, "visitor_id": event.visitor_id, "kind": event.kind}
    require_match(f"interaction {ctx.key[:64]}", claims, dict(row._mapping))
    ctx.add_to_batch((row.tenant_id, row.visitor_id), row.occurred_at)


@event
class TenantAnalyticsSyncRequested(DomainEvent):
    TYPE = "job.sync_tenant_analytics.requested"
    tenant_id: str
    day: date


def rollup(conn: Connection, tenant_id: str, day: date) -> dict[str, Any]:
    """The day's figures from the interactions table."""
    start = datetime.combine(day, time(0), tzinfo=utcnow().tzinfo)
    i = interactions

    def count(kind: str) -> Any:
        return func.coalesce(func.sum(case((i.c.kind == kind, 1), else_=0)), 0)

    row = conn.execute(
        select(
            count("page_view"),
            count("product_view"),
            count("add_to_cart"),
            count("checkout"),
            func.count(distinct(i.c.visitor_id)),
        ).where(
            i.c.tenant_id == tenant_id,
            i.c.occurred_at >= start,
            i.c.occurred_at < start + timedelta(days=1),
        )
    ).one()
    return {
        "page_views": int(row[0]),
        "product_views": int(row[1]),
        "add_to_cart": int(row[2]),
        "checkouts": int(row[3]),
        "unique_visitors": int(row[4]),
    }


@job(
    "sync-tenant-analytics",
    group="analytics",
    on=TenantAnalyticsSyncRequested,
    tries=3,
    backoff=(60, 120),
    timeout_s=300,
    unique_key=lambda e: f"{e.tenant_id}:{e.day.isoformat()}",
    unique_for_s=3600,
)
def sync_tenant_analytics(event: TenantAnalyticsSyncRequested, ctx: Context) -> None:
    """Replace the tenant's row for the day: running it twice leaves the same row. The
    record only says which (tenant, day) to recompute; the figures are the database's, and
    a tenant the database does not know gets no row."""
    conn = ctx.connection
    if conn.execute(select(tenants.c.id).where(tenants.c.id == event.tenant_id)).first() is None:
        raise NotVerified(f"tenant {event.tenant_id[:64]!r} does not exist: no rollup written")
    t = tenant_daily_analytics
    day = event.day.isoformat()
    conn.execute(delete(t).where(t.c.tenant_id == event.tenant_id, t.c.day == day))
    conn.execute(
        insert(t).values(
            tenant_id=event.tenant_id,
            day=day,
            computed_at=ctx.now,
            **rollup(conn, event.tenant_id, event.day),
        )
    )


def _day_param(due: ScheduledJobDue) -> str | None:
    return due.params.get("day") or None


def analytics_day(due: ScheduledJobDue) -> date:
    """`params["day"]` (YYYY-MM-DD) if given, else the day before the slot's UTC date: the
    daily firing at 00:30 UTC rolls up the day that just finished."""
    given = _day_param(due)
    if given is None:
        return due.utc_slot.date() - timedelta(days=1)
    try:
        return date.fromisoformat(given)
    except ValueError:
        raise DoNotRetry(
            f"params day={given!r} is not a date; give it as YYYY-MM-DD (e.g. 2026-11-21)"
        ) from None


def _analytics_lock(due: ScheduledJobDue) -> str:
    # Never raises at dispatch time: a malformed day gets a lock of its own, and the job then
    # fails it clearly (DoNotRetry) instead of the dispatching transaction failing.
    try:
        return analytics_day(due).isoformat()
    except DoNotRetry:
        return f"invalid:{_day_param(due)}"


@job(
    "sync-analytics",
    group="maintenance",
    on=ScheduledJobDue,
    tries=3,
    backoff=(60, 300),
    timeout_s=300,
    unique_key=_analytics_lock,
    unique_for_s=6 * 3600,
)
def sync_analytics(due: ScheduledJobDue, ctx: Context) -> None:
    """Dispatch one sync-tenant-analytics per approved tenant for the day."""
    day = analytics_day(due)
    dispatched = 0
    for chunk in tenant_chunks(ctx.connection, approved_only=True):
        for row in chunk:
            request = TenantAnalyticsSyncRequested(tenant_id=row.id, day=day)
            # None: that tenant's rollup for the day is already queued (its lock holds).
            if ctx.dispatch("sync-tenant-analytics", request, key=row.id):
                dispatched += 1
    ctx.log.info("tenant_analytics_dispatched", day=day.isoformat(), dispatched=dispatched)
