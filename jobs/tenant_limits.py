"""audit-tenant-limits: compare each tenant's usage with its plan limits for the slot's
month and record `TenantLimitExceeded` (through the Tenant aggregate) when over.

Usage is three GROUP BY queries over the state tables: products per tenant, orders placed in
the month (any status), recipients of campaigns launched in the month. The aggregate
remembers which (metric, month) it recorded, so auditing again records nothing new.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, Table, func, select

from consumers import ScheduledJobDue, job
from domain.schema import campaigns, orders, products, tenants
from domain.tenancy import LimitMetric, RecordTenantLimitExceeded
from jobs.config import Context
from jobs.scheduled_scan import only_tenant, tenant_chunks

__all__ = ["LIMIT_OF", "audit_tenant_limits", "month_bounds", "usage_by_tenant"]

# Which field of a tenant's `limits` each metric is compared with.
LIMIT_OF: dict[LimitMetric, str] = {
    "products": "max_products",
    "orders_per_month": "max_orders_per_month",
    "campaign_recipients": "max_campaign_recipients",
}


def month_bounds(at: datetime) -> tuple[datetime, datetime]:
    """[first instant of at's UTC month, first instant of the next month)."""
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    end = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def usage_by_tenant(
    conn: Connection, start: datetime, end: datetime, *, tenant_id: str | None = None
) -> dict[LimitMetric, dict[str, int]]:
    """Each metric's usage by tenant id (tenants with none are absent)."""

    def per_tenant(table: Table, measure: Any, *where: Any) -> Any:
        column: Column[Any] = table.c.tenant_id
        if tenant_id is not None:
            where = (*where, column == tenant_id)
        return select(column, measure).where(*where).group_by(column)

    c = campaigns.c
    queries: dict[LimitMetric, Any] = {
        "products": per_tenant(products, func.count()),
        "orders_per_month": per_tenant(
            orders, func.count(), orders.c.placed_at >= start, orders.c.placed_at < end
        ),
        "campaign_recipients": per_tenant(
            campaigns, func.sum(c.recipients_count), c.launched_at >= start, c.launched_at < end
        ),
    }
    return {
        metric: {str(t): int(n or 0) for t, n in conn.execute(query).all()}
        for metric, query in queries.items()
    }


@job(
    "audit-tenant-limits",
    group="maintenance",
    on=ScheduledJobDue,
    tries=3,
    backoff=(60, 300),
    timeout_s=300,
)
def audit_tenant_limits(due: ScheduledJobDue, ctx: Context) -> None:
    """Record a TenantLimitExceeded per (tenant, metric) over its limit this month."""
    slot = due.utc_slot
    period = slot.strftime("%Y-%m")
    narrowed = only_tenant(due)
    usage = usage_by_tenant(ctx.connection, *month_bounds(slot), tenant_id=narrowed)
    recorded = 0
    for chunk in tenant_chunks(ctx.connection, tenants.c.limits, tenant_id=narrowed):
        for row in chunk:
            limits = json.loads(row.limits)
            for metric, field in LIMIT_OF.items():
                used, limit = usage[metric].get(row.id, 0), limits.get(field)
                if limit is None or used <= limit:
                    continue
                result = ctx.run(
                    RecordTenantLimitExceeded(
                        tenant_id=row.id, metric=metric, period=period, usage=used, limit=limit
                    )
                )
                recorded += len(result.events)
    ctx.log.info("tenant_limits_audited", period=period, recorded=recorded)
