"""What the Webhooks page reads: the endpoints (keyset-paged on id, with their health over
the last hour), one endpoint, one event's deliveries, and a page of attempts.

The endpoint columns are named one by one: `secret` and `previous_secret` (ciphertext) are
never selected, so no page can show them whatever its template does. The URL, the
disabled reason and a response excerpt are a tenant's or a receiver's text: the templates
escape them, and the excerpt and the error go through the dashboard's masker here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from outbound.attempt_log import Health, attempts, endpoint_health
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e

__all__ = [
    "HEALTH_WINDOW",
    "EndpointView",
    "attempt_page",
    "endpoint_one",
    "endpoint_page",
    "event_deliveries",
]

HEALTH_WINDOW = timedelta(hours=1)
# Every column a page may show; never the secrets.
_SHOWN = (
    e.c.id,
    e.c.tenant_id,
    e.c.url,
    e.c.description,
    e.c.event_types,
    e.c.ordered,
    e.c.rate_limit_per_s,
    e.c.signing,
    e.c.state,
    e.c.paused_until,
    e.c.disabled_reason,
    e.c.disabled_at,
    e.c.consecutive_failures,
    e.c.failing_since,
    e.c.created_at,
)


@dataclass(frozen=True)
class EndpointView:
    """An endpoint as a page shows it, with its health over the last hour."""

    id: str
    tenant_id: str
    url: str
    description: str | None
    event_types: str
    ordered: bool
    rate_limit_per_s: float | None
    signing: str
    state: str
    paused_until: datetime | None
    disabled_reason: str | None
    disabled_at: datetime | None
    consecutive_failures: int
    failing_since: datetime | None
    created_at: datetime
    health: Health | None = None


def _views(conn: Connection, rows: list[Any], now: datetime) -> list[EndpointView]:
    ids = [row.id for row in rows]
    health = endpoint_health(conn, now - HEALTH_WINDOW, now, endpoint_ids=ids) if ids else {}
    return [EndpointView(**row._mapping, health=health.get(row.id)) for row in rows]


def endpoint_page(
    conn: Connection,
    now: datetime,
    *,
    tenant: str | None,
    state: str | None,
    after: str | None,
    limit: int,
) -> list[EndpointView]:
    """Endpoints by id (the primary key: keyset paging), optionally one tenant's or in
    one state."""
    query = select(*_SHOWN).order_by(e.c.id).limit(limit)
    if tenant:
        query = query.where(e.c.tenant_id == tenant)
    if state:
        query = query.where(e.c.state == state)
    if after is not None:
        query = query.where(e.c.id > after)
    return _views(conn, list(conn.execute(query)), now)


def endpoint_one(conn: Connection, endpoint_id: str, now: datetime) -> EndpointView | None:
    row = conn.execute(select(*_SHOWN).where(e.c.id == endpoint_id)).first()
    return _views(conn, [row], now)[0] if row is not None else None


def event_deliveries(conn: Connection, event_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The event's deliveries, one per endpoint (the unique (event_id, endpoint_id)),
    with their endpoint's tenant, URL and state."""
    query = (
        select(
            d.c.id, d.c.endpoint_id, d.c.webhook_id, d.c.event_type, d.c.status, d.c.attempts,
            d.c.next_attempt_at, d.c.last_status_code, d.c.last_error, d.c.created_at,
            d.c.delivered_at, e.c.tenant_id, e.c.url, e.c.state,
        )
        .select_from(d.outerjoin(e, e.c.id == d.c.endpoint_id))
        .where(d.c.event_id == event_id)
        .order_by(d.c.id)
        .limit(limit)
    )  # fmt: skip
    return [dict(row._mapping) for row in conn.execute(query)]


def attempt_page(
    conn: Connection,
    mask: Callable[[str], str],
    *,
    endpoint_id: str | None = None,
    event_id: str | None = None,
    failed_only: bool = False,
    since: datetime | None = None,
    before: int | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of attempts newest first (outbound.attempt_log), the receiver's text masked."""
    rows = attempts(
        conn, endpoint_id=endpoint_id, event_id=event_id, failed_only=failed_only, since=since,
        limit=limit, before_id=before,
    )  # fmt: skip
    shown = []
    for row in rows:
        item = row.as_dict()
        item["response_excerpt"] = mask(row.response_excerpt or "")
        item["error"] = mask(row.error or "")
        shown.append(item)
    return shown
