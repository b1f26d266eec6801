"""fan-out-webhooks through the runtime's real attempt path (consumers.testing, no broker),
on every backend: the stored event becomes one delivery per subscribed endpoint, once; a
forged record (claims that differ from the stored event) or an unknown event id fails the
job and makes no delivery (ADR 014, ADR 021)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select

from consumers.testing import JobResult, JobRunner
from domain import CommandBus
from domain.event_store import row_to_recorded
from domain.events import DomainEvent, RecordedEvent, registry
from domain.schema import domain_events
from domain.tenancy import OnboardTenant, TenantOnboarded
from jobs import AppConfig
from jobs.webhook_fanout import FANOUT_JOB, tenant_of
from tests.outbound_helpers import add_endpoint, deliveries

TOPIC = "tenant-events"


def _onboarded(engine: Engine, tenant_id: str) -> RecordedEvent:
    CommandBus(engine, shards=8).dispatch(
        OnboardTenant(tenant_id=tenant_id, name="Clay & Co", contact_email="o@clay.io")
    )
    with engine.connect() as conn:
        row = conn.execute(
            select(domain_events).where(domain_events.c.aggregate_id == tenant_id)
        ).one()
    return row_to_recorded(row, registry)


def _run(engine: Engine, event: DomainEvent, event_id: str, key: str) -> JobResult:
    runner = JobRunner(engine, config=AppConfig())
    return runner.run(FANOUT_JOB, event, key=key, event_id=event_id, topic=TOPIC)


def test_the_stored_event_becomes_one_delivery_per_subscribed_endpoint(engine: Engine) -> None:
    add_endpoint(engine, "ep_all", tenant_id="t-clay")
    add_endpoint(engine, "ep_tenant", tenant_id="t-clay", event_types=("tenant.onboarded",))
    add_endpoint(engine, "ep_orders", tenant_id="t-clay", event_types=("order.*",))
    add_endpoint(engine, "ep_else", tenant_id="t-other")
    stored = _onboarded(engine, "t-clay")
    assert tenant_of(stored) == "t-clay"
    result = _run(engine, stored.event, stored.event_id, "t-clay")
    assert result.outcome == "done"
    rows = deliveries(engine)
    assert [r.endpoint_id for r in rows] == ["ep_all", "ep_tenant"]
    body = json.loads(rows[0].payload)
    assert body["id"] == stored.event_id
    assert body["type"] == "tenant.onboarded"
    assert body["data"] == stored.event.model_dump(mode="json")
    assert body["timestamp"].endswith("Z")
    # The same record again is a duplicate for the runtime; the store would add nothing either.
    again = _run(engine, stored.event, stored.event_id, "t-clay")
    assert again.outcome == "duplicate"
    assert len(deliveries(engine)) == 2


@pytest.mark.parametrize("forgery", ["payload", "key"])
def test_a_forged_record_fails_with_record_mismatch_and_makes_no_delivery(
    engine: Engine, forgery: str
) -> None:
    add_endpoint(engine, "ep_all", tenant_id="t-clay")
    add_endpoint(engine, "ep_evil", tenant_id="t-evil")
    stored = _onboarded(engine, "t-clay")
    event, key, field = stored.event, "t-clay", "data.name"
    if forgery == "payload":
        event = stored.event.model_copy(update={"name": "Evil Corp"})
    else:
        key, field = "t-evil", "key"
    result = _run(engine, event, stored.event_id, key)
    assert (result.outcome, result.reason) == ("failed", "record_mismatch")
    error = result.error or ""
    assert field in error
    assert "Evil" not in error
    assert "t-evil" not in error
    assert deliveries(engine) == []


def test_a_record_with_an_unknown_event_id_is_not_verified(engine: Engine) -> None:
    add_endpoint(engine, "ep_all", tenant_id="t-clay")
    event = TenantOnboarded.model_validate(
        {"name": "Clay", "contact_email": "o@clay.io", "plan": "free", "limits": {}}
    )
    result = _run(engine, event, "00000000-0000-4000-8000-000000000000", "t-clay")
    assert (result.outcome, result.reason) == ("failed", "not_verified")
    assert deliveries(engine) == []
