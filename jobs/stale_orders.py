"""release-stale-orders: cancel PENDING orders nobody paid within 30 minutes, restoring their
stock through the domain (CancelOrder: events, projections and outbox rows together).

The coordinator only finds them and dispatches one `release-stale-order` job per order, so
each order is cancelled in its own savepoint, with its own retries and failed-jobs row; one
bad order does not hold up the others. The per-order job checks again, because a payment may
have landed between the scan and the job: a paid order is left alone, quietly.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from pydantic import Field
from sqlalchemy import Connection, select

from consumers import ScheduledJobDue, job
from domain.errors import RuleViolation
from domain.events import DomainEvent, event
from domain.ordering import CancelOrder, OrderStatus
from domain.schema import orders
from jobs.config import Context
from jobs.scheduled_scan import keyset_chunks, only_tenant

__all__ = [
    "ORDER_CHUNK",
    "STALE_AFTER",
    "StaleOrderReleaseDue",
    "release_stale_order",
    "release_stale_orders",
    "stale_order_ids",
]

STALE_AFTER = timedelta(minutes=30)
# Orders read per query by the coordinator (a module constant so tests can cross chunks).
ORDER_CHUNK = 500
CANCEL_REASON = "stale: not paid within 30 minutes"


@event
class StaleOrderReleaseDue(DomainEvent):
    TYPE = "job.release_stale_order.due"
    order_id: str = Field(min_length=1, max_length=64)


def stale_order_ids(
    conn: Connection, cutoff: datetime, *, tenant_id: str | None = None, chunk: int
) -> Iterator[list[str]]:
    """Ids of PENDING orders placed before `cutoff`, in keyset chunks by (unique) id."""
    o = orders
    query = select(o.c.id).where(o.c.status == OrderStatus.PENDING, o.c.placed_at < cutoff)
    if tenant_id is not None:
        query = query.where(o.c.tenant_id == tenant_id)
    for rows in keyset_chunks(conn, query, o.c.id, chunk=chunk):
        yield [row.id for row in rows]


@job(
    "release-stale-orders",
    group="maintenance",
    on=ScheduledJobDue,
    tries=3,
    backoff=(60, 300),
    timeout_s=300,
)
def release_stale_orders(due: ScheduledJobDue, ctx: Context) -> None:
    """Dispatch one release per stale PENDING order (of one tenant, if the run names one)."""
    cutoff = ctx.now - STALE_AFTER
    dispatched = 0
    for chunk in stale_order_ids(
        ctx.connection, cutoff, tenant_id=only_tenant(due), chunk=ORDER_CHUNK
    ):
        for order_id in chunk:
            request = StaleOrderReleaseDue(order_id=order_id)
            # None: a release of this order is already queued (its lock holds).
            if ctx.dispatch("release-stale-order", request, key=order_id):
                dispatched += 1
    ctx.log.info("stale_orders_dispatched", cutoff=cutoff.isoformat(), dispatched=dispatched)


@job(
    "release-stale-order",
    group="maintenance",
    on=StaleOrderReleaseDue,
    tries=5,
    backoff=(5, 30, 120),
    timeout_s=30,
    unique_key=lambda e: e.order_id,
    unique_for_s=3600,
)
def release_stale_order(due: StaleOrderReleaseDue, ctx: Context) -> None:
    """Cancel the order if it is still PENDING and still stale; otherwise do nothing."""
    o = orders
    row = ctx.connection.execute(
        select(o.c.status, o.c.placed_at).where(o.c.id == due.order_id)
    ).one_or_none()
    if row is None or row.status != OrderStatus.PENDING or row.placed_at >= ctx.now - STALE_AFTER:
        ctx.log.info(
            "stale_order_left_alone",
            order_id=due.order_id,
            status=None if row is None else row.status,
        )
        return
    try:
        ctx.run(CancelOrder(order_id=due.order_id, reason=CANCEL_REASON))
    except RuleViolation as exc:
        # Paid between our check and the cancel (a payment committed in between): not ours.
        ctx.log.info("stale_order_left_alone", order_id=due.order_id, reason=str(exc))
        return
    ctx.log.info("stale_order_released", order_id=due.order_id)
