"""Resend and recover on the three backends: the delivery back to pending, due now, its
schedule from the first try, the same webhook id, one audit row each; refusals (unknown
delivery, unknown or disabled endpoint) change nothing; recover takes only the endpoint's
failed deliveries since the time, across chunks."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from outbound.recovery import recover, resend
from outbox.errors import Refused
from outbox.types import utcnow
from tests.webhook_ops_helpers import (
    add_delivery,
    add_endpoint,
    audit_rows,
    delivery,
    webhook_id,
)

pytestmark = pytest.mark.integration


def test_resend_starts_the_schedule_again_with_the_same_webhook_id(engine: Engine) -> None:
    now = utcnow().replace(microsecond=0)
    later = now + timedelta(minutes=5)
    with engine.begin() as conn:
        add_endpoint(conn, "ep_a", now, state="paused", paused_until=later)
        failed = add_delivery(conn, "ev-1", "ep_a", now - timedelta(days=1))
        done = add_delivery(
            conn, "ev-2", "ep_a", now, status="delivered", attempts=1, delivered_at=now
        )
    with engine.begin() as conn:
        assert resend(
            conn, event_id="ev-1", endpoint_id="ep_a", actor="olga", reason="fixed", now=later
        )
        assert resend(
            conn, event_id="ev-2", endpoint_id="ep_a", actor="olga", reason="again", now=later
        )
    for delivery_id, event_id in ((failed, "ev-1"), (done, "ev-2")):
        row = delivery(engine, delivery_id)
        assert row.status == "pending" and row.attempts == 0
        assert row.next_attempt_at == later and row.delivered_at is None
        assert row.webhook_id == webhook_id(event_id, "ep_a")
    audits = audit_rows(engine, "webhook-resend")
    assert [(a.actor, a.target, a.reason) for a in audits] == [
        ("olga", f"delivery:{failed}", "fixed"),
        ("olga", f"delivery:{done}", "again"),
    ]
    details = json.loads(audits[0].details)
    assert details["previous_status"] == "failed" and details["attempts"] == 8
    assert details["webhook_id"] == webhook_id("ev-1", "ep_a")


def test_resend_leaves_a_delivery_in_flight_alone(engine: Engine) -> None:
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        add_endpoint(conn, "ep_a", now)
        leased = add_delivery(
            conn, "ev-1", "ep_a", now, status="delivering", attempts=2, lease_owner="w1",
            lease_expires_at=now + timedelta(minutes=1),
        )  # fmt: skip
    with engine.begin() as conn:
        assert not resend(conn, event_id="ev-1", endpoint_id="ep_a", actor="o", reason="r", now=now)
    assert delivery(engine, leased).lease_owner == "w1"
    assert audit_rows(engine, "webhook-resend") == []


@pytest.mark.parametrize(
    ("event_id", "endpoint_id", "says"),
    [
        ("ev-unknown", "ep_a", "no delivery of event 'ev-unknown'"),
        ("ev-1", "ep_nope", "no webhook endpoint 'ep_nope'"),
        ("ev-1", "ep_off", "is disabled (answered 410): nothing sent; enable it first"),
    ],
)
def test_resend_refuses_clearly_and_changes_nothing(
    engine: Engine, event_id: str, endpoint_id: str, says: str
) -> None:
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        add_endpoint(conn, "ep_a", now)
        add_endpoint(conn, "ep_off", now, state="disabled", disabled_reason="answered 410")
        kept = add_delivery(conn, "ev-1", "ep_off", now)
    with pytest.raises(Refused, match=re.escape(says)), engine.begin() as conn:
        resend(conn, event_id=event_id, endpoint_id=endpoint_id, actor="o", reason="r", now=now)
    assert delivery(engine, kept).status == "failed"
    assert audit_rows(engine, "webhook-resend") == []


def test_recover_takes_every_failed_delivery_since_then_across_chunks(engine: Engine) -> None:
    now = utcnow().replace(microsecond=0)
    since = now - timedelta(hours=6)
    with engine.begin() as conn:
        add_endpoint(conn, "ep_a", now)
        add_endpoint(conn, "ep_b", now)
        wanted = [add_delivery(conn, f"ev-{n}", "ep_a", now - timedelta(hours=1)) for n in range(7)]
        too_old = add_delivery(conn, "ev-old", "ep_a", since - timedelta(seconds=1))
        other = add_delivery(conn, "ev-0", "ep_b", now)
        fine = add_delivery(conn, "ev-ok", "ep_a", now, status="delivered", attempts=1)
        waiting = add_delivery(conn, "ev-w", "ep_a", now, status="pending", attempts=3)
    with engine.begin() as conn:
        count = recover(
            conn, endpoint_id="ep_a", since=since, actor="olga", reason="receiver fixed",
            now=now, chunk=3,
        )  # fmt: skip
    assert count == 7
    assert {delivery(engine, i).status for i in wanted} == {"pending"}
    assert {delivery(engine, i).attempts for i in wanted} == {0}
    assert delivery(engine, too_old).status == "failed"
    assert delivery(engine, other).status == "failed"
    assert delivery(engine, fine).status == "delivered"
    assert delivery(engine, waiting).attempts == 3
    (audit,) = audit_rows(engine, "webhook-recover")
    assert (audit.actor, audit.target, audit.reason) == ("olga", "endpoint:ep_a", "receiver fixed")
    details = json.loads(audit.details)
    assert details["recovered"] == 7 and details["since"] == since.isoformat()
    with engine.begin() as conn:  # again: nothing failed is left
        assert recover(conn, endpoint_id="ep_a", since=since, actor="o", reason="r", now=now) == 0


def test_recover_refuses_a_disabled_or_unknown_endpoint(engine: Engine) -> None:
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        add_endpoint(conn, "ep_off", now, state="disabled", disabled_reason="by an operator")
        kept = add_delivery(conn, "ev-1", "ep_off", now)
    for endpoint_id, says in (("ep_off", "is disabled"), ("ep_nope", "no webhook endpoint")):
        with pytest.raises(Refused, match=says), engine.begin() as conn:
            recover(conn, endpoint_id=endpoint_id, since=now - timedelta(days=1), actor="o",
                    reason="r", now=now)  # fmt: skip
    assert delivery(engine, kept).status == "failed"
    assert audit_rows(engine, "webhook-recover") == []
