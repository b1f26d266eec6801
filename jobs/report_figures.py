"""The figures of a PDF sales report, from the orders projection: the one place they are
computed, so that the report shows exactly what the database holds.

- per status: orders, their totals, paid and refunded cents (one GROUP BY);
- totals: orders, revenue (paid less refunded cents), paid and cancelled orders;
- top products: units and line revenue over the period's orders that were not cancelled,
  summed from the orders' lines while walking them in keyset chunks (the lines are JSON,
  which the three backends read three different ways in SQL).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, func, select

from domain.ordering import OrderStatus
from domain.schema import orders, tenants
from jobs.sales_rows import period_bounds, sales_rows

__all__ = ["TOP_PRODUCTS", "ReportFigures", "StatusLine", "TopProduct", "report_figures"]

TOP_PRODUCTS = 10
o = orders


@dataclass(frozen=True, slots=True)
class StatusLine:
    status: str
    orders: int
    total_cents: int


@dataclass(frozen=True, slots=True)
class TopProduct:
    product_id: str
    sku: str
    name: str
    quantity: int
    revenue_cents: int


@dataclass(frozen=True, slots=True)
class ReportFigures:
    tenant_id: str
    tenant_name: str
    period_from: date
    period_to: date
    orders: int
    revenue_cents: int
    paid_orders: int
    cancelled_orders: int
    by_status: tuple[StatusLine, ...]
    top_products: tuple[TopProduct, ...]


def report_figures(
    conn: Connection, tenant_id: str, period_from: date, period_to: date
) -> ReportFigures:
    start, end = period_bounds(period_from, period_to)
    grouped = conn.execute(
        select(
            o.c.status,
            func.count(),
            func.coalesce(func.sum(o.c.total_cents), 0),
            func.coalesce(func.sum(o.c.paid_cents), 0),
            func.coalesce(func.sum(o.c.refunded_cents), 0),
        )
        .where(o.c.tenant_id == tenant_id, o.c.placed_at >= start, o.c.placed_at < end)
        .group_by(o.c.status)
        .order_by(o.c.status)
    ).all()
    counts = {row[0]: int(row[1]) for row in grouped}
    name = conn.execute(select(tenants.c.name).where(tenants.c.id == tenant_id)).scalar()
    return ReportFigures(
        tenant_id=tenant_id,
        tenant_name=name or tenant_id,
        period_from=period_from,
        period_to=period_to,
        orders=sum(counts.values()),
        revenue_cents=sum(int(row[3]) - int(row[4]) for row in grouped),
        paid_orders=counts.get(OrderStatus.PAID, 0),
        cancelled_orders=counts.get(OrderStatus.CANCELLED, 0),
        by_status=tuple(StatusLine(row[0], int(row[1]), int(row[2])) for row in grouped),
        top_products=_top_products(conn, tenant_id, period_from, period_to),
    )


def _top_products(
    conn: Connection, tenant_id: str, period_from: date, period_to: date
) -> tuple[TopProduct, ...]:
    quantity: Counter[str] = Counter()
    revenue: Counter[str] = Counter()
    names: dict[str, tuple[str, str]] = {}
    for rows in sales_rows(conn, tenant_id, period_from, period_to):
        for row in rows:
            product_id = str(row[4])
            if not product_id or row[2] == OrderStatus.CANCELLED:
                continue
            quantity[product_id] += int(row[7])
            revenue[product_id] += int(row[9])
            names[product_id] = (str(row[5]), str(row[6]))
    ranked = sorted(quantity, key=lambda pid: (-quantity[pid], -revenue[pid], pid))
    return tuple(
        TopProduct(pid, *names[pid], quantity[pid], revenue[pid]) for pid in ranked[:TOP_PRODUCTS]
    )
