"""Deliveries (ADR 021): who is subscribed, the envelope, and one row per (event, endpoint);
outbound.claims hands the due ones to a dispatcher.

"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select

from outbound.config import WebhookConfig
from outbound.endpoint_rules import subscribed as takes
from outbound.ports import Endpoint, EndpointState
from outbox.notify import WEBHOOKS_CHANNEL, notify
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e
from outbox.sql import insert_ignoring_duplicate

__all__ = [
    "UNDELIVERED",
    "DeliveryStatus",
    "create",
    "envelope",
    "subscribed",
    "webhook_id_for",
]


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"  # leased by a dispatcher until lease_expires_at
    DELIVERED = "delivered"
    FAILED = "failed"  # after the schedule's last try, or refused: final
    CANCELLED = "cancelled"  # its endpoint was disabled or removed


UNDELIVERED = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)


def _endpoint(row: Any) -> Endpoint:
    try:
        types = json.loads(row.event_types)
    except (TypeError, ValueError):
        types = []
    return Endpoint(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        event_types=tuple(t for t in types if isinstance(t, str))
        if isinstance(types, list)
        else (),
        ordered=bool(row.ordered),
        rate_limit_per_s=row.rate_limit_per_s,
        signing=row.signing,
        state=EndpointState(row.state),
        paused_until=row.paused_until,
        description=row.description,
    )


def subscribed(
    conn: Connection, tenant_id: str, event_type: str, config: WebhookConfig
) -> list[Endpoint]:
    """The tenant's enabled or paused endpoints subscribed to `event_type` (never one of
    `config.excluded_event_types`), by id.

    On PostgreSQL and MariaDB the tenant's live endpoint rows stay share-locked until the
    caller commits: an endpoint disabled or removed meanwhile waits for the deliveries made
    for it here, then cancels them, instead of leaving them pending for an endpoint that will
    never send them. (SQLite runs one writer at a time.)"""
    if event_type in config.excluded_event_types:
        return []
    query = (
        select(e)
        .where(
            e.c.tenant_id == tenant_id,
            e.c.state.in_([EndpointState.ENABLED, EndpointState.PAUSED]),
        )
        .order_by(e.c.id)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True, of=e)
    elif conn.dialect.name in ("mysql", "mariadb"):
        query = query.with_for_update(read=True)
    found = [_endpoint(row) for row in conn.execute(query).all()]
    return [ep for ep in found if takes(ep.event_types, event_type, config)]


def webhook_id_for(event_id: str, endpoint_id: str) -> str:
    """The `webhook-id` header: the same for every attempt and every resend."""
    return "msg_" + hashlib.sha256(f"{event_id}:{endpoint_id}".encode()).hexdigest()[:32]


def envelope(
    event_id: str, event_type: str, occurred_at: datetime, payload: dict[str, Any]
) -> bytes:
    """The body signed and sent: canonical JSON (sorted keys, no spaces, UTF-8) of
    {"id", "type", "timestamp" (ISO-8601 UTC, "Z"), "data"}."""
    at = occurred_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    body = {"id": event_id, "type": event_type, "timestamp": at, "data": payload}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def create(
    conn: Connection,
    *,
    event_id: str,
    event_type: str,
    tenant_id: str,
    occurred_at: datetime,
    payload: dict[str, Any],
    endpoints: Sequence[Endpoint],
    now: datetime,
    schedule_s: Sequence[float] = (0.0,),
) -> int:
    """One pending delivery per endpoint, in the caller's transaction; an (event, endpoint)
    that already has one is left as it is (a redelivered event adds nothing). Returns how
    many were added. The first try is due `schedule_s[0]` after `now`; on PostgreSQL the
    commit wakes the idle dispatchers (outbox.notify.WEBHOOKS_CHANNEL)."""
    body = envelope(event_id, event_type, occurred_at, payload).decode()
    due = now + timedelta(seconds=schedule_s[0] if schedule_s else 0.0)
    added = 0
    for ep in endpoints:
        added += insert_ignoring_duplicate(
            conn,
            d,
            {
                "endpoint_id": ep.id,
                "event_id": event_id,
                "webhook_id": webhook_id_for(event_id, ep.id),
                "tenant_id": tenant_id,
                "event_type": event_type,
                "payload": body,
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": due,
                "created_at": now,
            },
        )
    if added:  # the dispatchers listening (PostgreSQL) claim them when this commits
        notify(conn, WEBHOOKS_CHANNEL)
    return added
