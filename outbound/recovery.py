"""Resend and recover (issue 25 item 4, ADR 021): an operator sends a delivery again.

- resend: one (event, endpoint) delivery goes back to `pending`, due now, its attempts
  reset to 0 so the retry schedule starts again from the first try, with the SAME
  webhook id (the receiver deduplicates by it: a resend of a delivered event is seen as
  the same message).
- recover: every `failed` delivery of an endpoint created since a time, the same way, in
  bounded chunks (a chunk of ids found by the (endpoint_id, id) index, then updated).

Each runs in the caller's transaction with its audit row (outbox.audit), as the outbox's
repairs do (outbox.parking); a refusal (an unknown delivery or endpoint, a disabled
endpoint) raises `Refused` and changes nothing. A paused endpoint is accepted: the
deliveries wait for the breaker's cool-down like the others. A delivery a dispatcher holds
right now (`delivering`) is left alone: its outcome is about to be written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select, update

from outbound.ports import EndpointState
from outbox.audit import record
from outbox.errors import Refused
from outbox.notify import WEBHOOKS_CHANNEL, notify
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e

__all__ = ["CHUNK", "recover", "recoverable", "resend"]

CHUNK = 500
_IN_FLIGHT = "delivering"
_FAILED = "failed"


def _usable_endpoint(conn: Connection, endpoint_id: str) -> Any:
    endpoint = conn.execute(
        select(e.c.id, e.c.tenant_id, e.c.state, e.c.disabled_reason).where(e.c.id == endpoint_id)
    ).first()
    if endpoint is None:
        raise Refused(f"no webhook endpoint {endpoint_id!r} (see `outbox webhooks endpoints list`)")
    if endpoint.state == EndpointState.DISABLED.value:
        why = f" ({endpoint.disabled_reason})" if endpoint.disabled_reason else ""
        raise Refused(
            f"endpoint {endpoint_id} is disabled{why}: nothing sent; enable it first "
            f"(`outbox webhooks endpoints enable {endpoint_id}`)"
        )
    return endpoint


def _again(now: datetime) -> dict[str, Any]:
    """The columns that start a delivery's schedule again."""
    return {
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "delivered_at": None,
    }


def resend(
    conn: Connection,
    *,
    event_id: str,
    endpoint_id: str,
    actor: str,
    reason: str | None,
    now: datetime,
) -> bool:
    """Send the (event, endpoint) delivery again, from the first try of its schedule.
    True when it was put back; False when a dispatcher is sending it right now."""
    _usable_endpoint(conn, endpoint_id)
    columns = (d.c.id, d.c.status, d.c.attempts, d.c.webhook_id, d.c.last_status_code)
    row = conn.execute(
        select(*columns, d.c.last_error).where(
            d.c.event_id == event_id, d.c.endpoint_id == endpoint_id
        )
    ).first()
    if row is None:
        raise Refused(
            f"no delivery of event {event_id!r} to endpoint {endpoint_id}: the endpoint was "
            "not subscribed to it, the event is unknown, or the delivery was pruned"
        )
    if row.status == _IN_FLIGHT:
        return False
    changed = conn.execute(
        update(d).where(d.c.id == row.id, d.c.status == row.status).values(**_again(now))
    ).rowcount
    if not changed:
        return False  # a dispatcher claimed it between the read and the update
    notify(conn, WEBHOOKS_CHANNEL)
    record(
        conn,
        at=now,
        actor=actor,
        action="webhook-resend",
        target=f"delivery:{row.id}",
        reason=reason,
        details={
            "event_id": event_id,
            "endpoint_id": endpoint_id,
            "webhook_id": row.webhook_id,
            "previous_status": row.status,
            "attempts": row.attempts,
            "last_status_code": row.last_status_code,
            "last_error": (row.last_error or "")[:200],
        },
    )
    return True


def recoverable(endpoint_id: str, since: datetime) -> Select[Any]:
    """The ids `recover` would send again (what a confirmation counts)."""
    return select(d.c.id).where(
        d.c.endpoint_id == endpoint_id, d.c.status == _FAILED, d.c.created_at >= since
    )


def recover(
    conn: Connection,
    *,
    endpoint_id: str,
    since: datetime,
    actor: str,
    reason: str | None,
    now: datetime,
    chunk: int = CHUNK,
) -> int:
    """Every `failed` delivery of the endpoint created at or after `since`, again (as
    `resend`); how many. Chunks of `chunk` ids keep each statement bounded; the whole
    recovery is the caller's one transaction, with one audit row."""
    _usable_endpoint(conn, endpoint_id)
    done = 0
    after = 0
    first_id: int | None = None
    while True:
        found = recoverable(endpoint_id, since).where(d.c.id > after).order_by(d.c.id)
        ids = list(conn.execute(found.limit(chunk)).scalars())
        if not ids:
            break
        first_id = ids[0] if first_id is None else first_id
        done += conn.execute(
            update(d).where(d.c.id.in_(ids), d.c.status == _FAILED).values(**_again(now))
        ).rowcount
        after = ids[-1]
        if len(ids) < chunk:
            break
    if done:
        notify(conn, WEBHOOKS_CHANNEL)
    record(
        conn,
        at=now,
        actor=actor,
        action="webhook-recover",
        target=f"endpoint:{endpoint_id}",
        reason=reason,
        details={
            "endpoint_id": endpoint_id,
            "since": since.isoformat(),
            "recovered": done,
            "first_delivery_id": first_id,
            "last_delivery_id": after or None,
        },
    )
    return done
