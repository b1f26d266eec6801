"""Deliveries (ADR 021): who is subscribed, the envelope, one row per (event, endpoint), and
the claim that hands due deliveries to a dispatcher.

The claim is where the per-endpoint rules live, checked in the database so that they hold
however many dispatchers run:

- at most one delivery of an endpoint in flight (a live lease), and one per claim;
- an ordered endpoint gets only its oldest undelivered delivery (lowest id): a failing head
  holds that endpoint's later deliveries, nobody else's;
- a paused endpoint gets nothing until `paused_until`; then one delivery at a time (the
  breaker's half-open probe; the outcome closes or re-opens it, outbound.health);
- the rate limit: an endpoint whose `next_send_at` is ahead is skipped, and the claim moves
  it on by 1 / `rate_limit_per_s` in the same transaction.

PostgreSQL and MariaDB lock the endpoint rows with FOR UPDATE SKIP LOCKED (two dispatchers
never wait on, nor both take, one endpoint); the deliveries are then read by a fresh
statement under that lock (READ COMMITTED sees the last claim's commit) and taken with a
fenced UPDATE. SQLite has one writer (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from outbound.config import WebhookConfig
from outbound.endpoint_rules import subscribed as takes
from outbound.ports import Endpoint, EndpointState
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e
from outbox.sql import insert_ignoring_duplicate

__all__ = [
    "Claimed",
    "DeliveryStatus",
    "claim_due",
    "create",
    "envelope",
    "subscribed",
    "webhook_id_for",
]

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


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
    many were added. The first try is due `schedule_s[0]` after `now`."""
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
    return added


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased to one dispatcher: what it sends, and the lease that fences what it
    writes back (`lease_owner` is unique to this claim)."""

    id: int
    endpoint_id: str
    event_id: str
    webhook_id: str
    tenant_id: str
    event_type: str
    body: bytes
    attempt: int  # this attempt's number, 1 for the first
    url: str
    lease_owner: str
    lease_expires_at: datetime
    half_open: bool  # the endpoint was paused: this is the breaker's probe


def _due(now: datetime, table: Any = d) -> Any:
    return or_(
        and_(table.c.status == DeliveryStatus.PENDING, table.c.next_attempt_at <= now),
        and_(table.c.status == DeliveryStatus.DELIVERING, table.c.lease_expires_at <= now),
    )


def _live(now: datetime, table: Any = d) -> Any:
    return and_(table.c.status == DeliveryStatus.DELIVERING, table.c.lease_expires_at > now)


def _candidates(conn: Connection, now: datetime, limit: int) -> list[Any]:
    """Open endpoints with a due delivery and none in flight, least recently served first,
    locked (skipping those another dispatcher holds)."""
    query = (
        select(e.c.id)
        .where(
            or_(
                e.c.state == EndpointState.ENABLED,
                and_(e.c.state == EndpointState.PAUSED, e.c.paused_until <= now),
            ),
            or_(e.c.next_send_at.is_(None), e.c.next_send_at <= now),
            # Driven by the due index (status, next_attempt_at), not by each endpoint's
            # history: an endpoint's delivered rows are never scanned here.
            e.c.id.in_(select(d.c.endpoint_id).where(_due(now))),
            e.c.id.not_in(select(d.c.endpoint_id).where(_live(now))),
        )
        .order_by(func.coalesce(e.c.next_send_at, _EPOCH), e.c.id)
        .limit(limit)
    )
    name = conn.dialect.name
    if name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=e)
    elif name in ("mysql", "mariadb"):
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query).all())


def _still_open(conn: Connection, endpoint_id: str, now: datetime) -> Any:
    """The locked endpoint read afresh (a statement of its own sees what committed before
    the lock was granted): None if it is no longer open or its rate limit says wait."""
    row = conn.execute(
        select(
            e.c.id, e.c.ordered, e.c.rate_limit_per_s, e.c.url, e.c.state, e.c.paused_until,
            e.c.next_send_at,
        ).where(e.c.id == endpoint_id)
    ).first()  # fmt: skip
    if row is None or (row.next_send_at is not None and row.next_send_at > now):
        return None
    if row.state == EndpointState.ENABLED:
        return row
    if row.state == EndpointState.PAUSED and row.paused_until is not None:
        return row if row.paused_until <= now else None
    return None


def _pick(conn: Connection, endpoint: Any, now: datetime) -> Any:
    """The delivery to send now for a locked endpoint, read afresh: None if one is in flight
    (a claim that committed after the candidates were read), or none is due; an ordered
    endpoint's oldest undelivered one only."""
    columns = [d.c.id, d.c.event_id, d.c.webhook_id, d.c.tenant_id, d.c.event_type]
    columns += [d.c.payload, d.c.attempts, d.c.status, d.c.next_attempt_at, d.c.lease_expires_at]
    mine = d.c.endpoint_id == endpoint.id
    if conn.execute(select(d.c.id).where(mine, _live(now)).limit(1)).first() is not None:
        return None
    if endpoint.ordered:
        head = conn.execute(
            select(*columns).where(mine, d.c.status.in_(UNDELIVERED)).order_by(d.c.id).limit(1)
        ).first()
        if head is None:
            return None
        if head.status == DeliveryStatus.PENDING:
            return head if head.next_attempt_at <= now else None
        return head if head.lease_expires_at is not None and head.lease_expires_at <= now else None
    return conn.execute(select(*columns).where(mine, _due(now)).order_by(d.c.id).limit(1)).first()


def claim_due(
    conn: Connection, owner: str, now: datetime, limit: int, config: WebhookConfig
) -> list[Claimed]:
    """Lease up to `limit` due deliveries, at most one per endpoint (see the module
    docstring), in the caller's transaction. `owner` names the dispatcher (at most 40
    characters are kept); each claim's lease owner adds a random suffix to it."""
    if limit <= 0:
        return []
    claimed: list[Claimed] = []
    expires = now + timedelta(seconds=config.lease_s)
    for candidate in _candidates(conn, now, limit):
        endpoint = _still_open(conn, candidate.id, now)
        if endpoint is None:
            continue
        row = _pick(conn, endpoint, now)
        if row is None:
            continue
        lease = f"{owner[:40]}/{secrets.token_hex(8)}"
        taken = conn.execute(
            update(d)
            .where(d.c.id == row.id, _due(now))
            .values(status=DeliveryStatus.DELIVERING, lease_owner=lease, lease_expires_at=expires)
        ).rowcount
        if taken != 1:
            continue
        rate = endpoint.rate_limit_per_s
        step = timedelta(seconds=1.0 / rate) if rate and rate > 0 else timedelta(0)
        conn.execute(update(e).where(e.c.id == endpoint.id).values(next_send_at=now + step))
        claimed.append(
            Claimed(
                id=int(row.id),
                endpoint_id=endpoint.id,
                event_id=row.event_id,
                webhook_id=row.webhook_id,
                tenant_id=row.tenant_id,
                event_type=row.event_type,
                body=row.payload.encode(),
                attempt=int(row.attempts) + 1,
                url=endpoint.url,
                lease_owner=lease,
                lease_expires_at=expires,
                half_open=endpoint.state == EndpointState.PAUSED,
            )
        )
    return claimed
