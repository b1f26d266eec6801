"""The record of the common outcome in one statement (PostgreSQL): an attempt delivered to
an endpoint that was healthy at the claim.

    if in_one_statement(conn.dialect.name, claimed, result):
        written = record_quick(conn, claimed, result, now)   # autocommit: one round trip

outbound.health.record takes this way by itself; the dispatcher asks `in_one_statement`
only to know that the record needs no transaction around it.

Such an outcome changes nothing of its endpoint's health (outbound.health: its run's lanes
are the only ones sending to it and halt at the first failure, whose failure count the next
delivered outcome of a later claim resets; a disable or a removal meanwhile has cancelled
the delivery, which the fence sees), so its record is two writes: the delivery's
fenced UPDATE and the attempt's INSERT. Here they are ONE statement, the UPDATE a
data-modifying CTE whose RETURNING feeds the INSERT: a lost lease updates nothing and so
inserts nothing. One statement is atomic on its own, so the dispatcher runs it in
autocommit, one round trip instead of four (psycopg 3 sends BEGIN as a round trip of its
own, then the two statements, then COMMIT), and the statement is built once, not on every
attempt. What it writes is exactly what `outbound.health.record` writes for that outcome.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Integer, bindparam, insert, literal, select, update

from outbound.claims import Claimed
from outbound.deliveries import DeliveryStatus
from outbound.ports import Outcome, SendResult
from outbox.schema_webhooks import webhook_attempts_table as a
from outbox.schema_webhooks import webhook_deliveries_table as d

__all__ = ["in_one_statement", "is_quick", "record_quick"]

log = structlog.get_logger(__name__)


def is_quick(claimed: Claimed, result: SendResult) -> bool:
    """Delivered, to an endpoint healthy at the claim: nothing of the endpoint changes."""
    return result.outcome == Outcome.DELIVERED and claimed.healthy


def in_one_statement(dialect: str, claimed: Claimed, result: SendResult) -> bool:
    """Whether this outcome's record is one statement (atomic alone: no transaction needed)."""
    return dialect == "postgresql" and is_quick(claimed, result)


def record_quick(conn: Connection, claimed: Claimed, result: SendResult, now: datetime) -> bool:
    """Write a quick outcome (`is_quick`) in one statement; False (nothing written) if the
    lease was lost. PostgreSQL only (a data-modifying CTE)."""
    if not is_quick(claimed, result):
        raise ValueError("only a delivered attempt to a healthy endpoint is recorded here")
    written = conn.execute(
        _statement(),
        {
            "q_id": claimed.id,
            "q_lease": claimed.lease_owner,
            "q_attempt": claimed.attempt,
            "q_code": result.status_code,
            "q_at": now,
            "q_endpoint": claimed.endpoint_id,
            "q_event": claimed.event_id,
            "q_webhook": claimed.webhook_id,
            "q_ms": max(0, int(result.duration_ms)),
            "q_error": (result.error or None) and result.error[:200],
            "q_excerpt": result.excerpt,
        },
    ).all()
    if len(written) != 1:
        log.warning("webhook_lease_lost", delivery_id=claimed.id, endpoint_id=claimed.endpoint_id)
        return False
    return True


@functools.cache
def _statement() -> Any:
    """WITH fenced AS (UPDATE deliveries ... RETURNING id) INSERT INTO attempts SELECT ...
    RETURNING id (parameter names prefixed: a column's own name is reserved in VALUES and
    SET; the attempt's id returned, as an INSERT ... SELECT's rowcount is not reported)."""

    def param(name: str, column: Any) -> Any:
        return bindparam(name, type_=column.type)

    fenced = (
        update(d)
        .where(
            d.c.id == param("q_id", d.c.id),
            d.c.lease_owner == param("q_lease", d.c.lease_owner),
            d.c.status == DeliveryStatus.DELIVERING,
        )
        .values(
            status=DeliveryStatus.DELIVERED,
            attempts=bindparam("q_attempt", type_=Integer),
            lease_owner=None,
            lease_expires_at=None,
            last_status_code=param("q_code", d.c.last_status_code),
            last_error=None,
            delivered_at=param("q_at", d.c.delivered_at),
        )
        .returning(d.c.id)
        .cte("fenced")
    )
    row = select(
        fenced.c.id,
        param("q_endpoint", a.c.endpoint_id),
        param("q_event", a.c.event_id),
        param("q_webhook", a.c.webhook_id),
        bindparam("q_attempt", type_=Integer),
        param("q_at", a.c.at),
        param("q_ms", a.c.duration_ms),
        literal(str(Outcome.DELIVERED), type_=a.c.outcome.type),
        param("q_code", a.c.status_code),
        param("q_error", a.c.error),
        param("q_excerpt", a.c.response_excerpt),
    )
    columns = ["delivery_id", "endpoint_id", "event_id", "webhook_id", "attempt", "at"]
    columns += ["duration_ms", "outcome", "status_code", "error", "response_excerpt"]
    return insert(a).from_select(columns, row).returning(a.c.id)
