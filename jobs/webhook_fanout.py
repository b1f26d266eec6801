"""fan-out-webhooks (group `webhooks`): one delivery per subscribed endpoint for every event
of the domain topics tenants may subscribe to (ADR 021).

The record is a notification (ADR 014): the event is read back from `domain_events` by its
id. An id the store does not hold fails at once (`not_verified`); a record whose type, key
or payload differ from the stored event fails at once (`record_mismatch`, the differing
fields named, never their values). Nothing is written either way.

What is sent is the STORED event (upcast to the current schema): its type, its time and
its payload in the envelope. The tenant is the stored payload's `tenant_id`, else the
stored metadata's (the aggregate's owner, which the unit of work writes with every event:
order.paid carries no tenant_id of its own), else the aggregate itself for a tenant's own
events. The deliveries are inserted in the job's transaction, one per (event, endpoint):
a redelivered record adds nothing.

Payment events (payment-events) are never fanned out: raw inbound bodies, and the money
lane reviewed before anything is retried. `WebhookConfig.excluded_event_types` says the
same for any other type.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from consumers import NotVerified, job, require_match
from domain.event_store import row_to_recorded
from domain.events import DomainEvent, RecordedEvent
from domain.events import registry as event_types
from domain.schema import domain_events
from jobs.config import Context
from outbound import deliveries
from outbox.envelope import canonical_json

__all__ = ["FANOUT_JOB", "fan_out_webhooks", "tenant_of"]

FANOUT_JOB = "fan-out-webhooks"


def _subscribable() -> tuple[type[DomainEvent], ...]:
    """Every registered event type of the `webhooks` group's topics (jobs.catalog), by its
    TYPE's prefix: order, product, appointment, sales_export, tenant, campaign."""
    prefixes = ("order.", "product.", "appointment.", "sales_export.", "tenant.", "campaign.")
    names = [n for n in event_types.names() if n.startswith(prefixes)]
    return tuple(event_types.class_for(n) for n in sorted(names))


@job(
    FANOUT_JOB,
    group="webhooks",
    on=_subscribable(),
    tries=8,
    backoff=(5, 30, 120, 600, 1800),
)
def fan_out_webhooks(event: DomainEvent, ctx: Context) -> None:
    """Insert the stored event's deliveries for its tenant's subscribed endpoints."""
    conn = ctx.connection
    row = conn.execute(
        select(domain_events).where(domain_events.c.event_id == ctx.event_id)
    ).one_or_none()
    if row is None:
        raise NotVerified(
            f"event {ctx.event_id[:64]} is not in domain_events: no webhook was made of it"
        )
    stored = row_to_recorded(row, event_types)
    claims = _claims(event, ctx.key)
    truth = _claims(stored.event, stored.aggregate_id)
    names = claims.keys() | truth.keys()  # a field only one of them has differs too
    require_match(
        f"event {stored.event_id}",
        {n: claims.get(n) for n in names},
        {n: truth.get(n) for n in names},
    )
    tenant_id = tenant_of(stored)
    if not tenant_id:
        ctx.log.info("webhook_fanout_no_tenant", type=stored.event.TYPE)
        return
    config = ctx.config.webhooks
    endpoints = deliveries.subscribed(conn, tenant_id, stored.event.TYPE, config)
    if not endpoints:
        return
    added = deliveries.create(
        conn,
        event_id=stored.event_id,
        event_type=stored.event.TYPE,
        tenant_id=tenant_id,
        occurred_at=stored.occurred_at,
        payload=stored.event.model_dump(mode="json"),
        endpoints=endpoints,
        now=ctx.now,
        schedule_s=config.schedule_s,
    )
    ctx.log.info(
        "webhook_deliveries_created",
        type=stored.event.TYPE,
        tenant_id=tenant_id,
        endpoints=len(endpoints),
        added=added,
    )


def _claims(event: DomainEvent, key: str) -> dict[str, Any]:
    """What a record says (or the store holds): its type, key and each payload field (as
    canonical JSON, so that nested values compare whole)."""
    fields = {f"data.{k}": canonical_json(v) for k, v in event.model_dump(mode="json").items()}
    return {"type": event.TYPE, "key": key, **fields}


def tenant_of(stored: RecordedEvent) -> str | None:
    """The tenant whose endpoints get the event (see the module docstring)."""
    tenant = getattr(stored.event, "tenant_id", None) or stored.metadata.get("tenant_id")
    if not tenant and stored.aggregate_type == "tenant":
        tenant = stored.aggregate_id
    return str(tenant) if tenant else None
