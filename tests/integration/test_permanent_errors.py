"""Permanent failures reach failed jobs after one attempt, with their reason; transient ones
keep the retry schedule (consumers.errors.permanent, through the real attempt path and
databases, run by consumers.testing with no broker)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, Field
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import OperationalError

from consumers import Group, JobContext, JobRegistry, job
from consumers.testing import JobRunner
from domain import CommandBus, registry
from domain.payments import (
    AcceptPaymentWebhook,
    PaymentNotice,
    PaymentWebhookReceived,
    accept_webhook,
)
from domain.schema import orders, payment_ledger
from outbox import Envelope, append
from outbox.types import utcnow
from tests import consumer_harness as ch
from tests.scenario import onboard, order, product

pytestmark = [pytest.mark.integration]


class _Amount(BaseModel):
    cents: int = Field(ge=0, le=10**12)


def _ledger_row(order_id: str) -> dict[str, Any]:
    return {
        "gateway": "standard",
        "payment_id": "pay-reused",
        "kind": "payment",
        "order_id": order_id,
        "tenant_id": "t-1",
        "amount_cents": 100,
        "recorded_at": utcnow(),
        "event_id": str(uuid.uuid4()),
    }


def _registry(attempts: dict[int, list[int]], scope: str) -> JobRegistry:
    registry = JobRegistry()

    @job("picky", on=ch.Pinged, tries=4, backoff=(0.2,), registry=registry)
    def picky(event: ch.Pinged, ctx: JobContext) -> None:
        attempts.setdefault(event.n, []).append(ctx.attempt)
        conn = ctx.connection
        if event.n == 1:  # a validation error: a negative amount
            _Amount(cents=-5)
        elif event.n == 2:  # a business key taken: the payment id of another order
            conn.execute(insert(payment_ledger).values(_ledger_row("o-2")))
        elif event.n == 3:  # a value the database cannot store (not on SQLite)
            ch.bump(conn, "x" * 10_000, 3)
        elif event.n == 4:  # transient: a lost connection, then it works
            if ctx.attempt < 3:
                raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
            ch.bump(conn, scope, 4)
        elif event.n == 5:  # transient for good: retried until its tries are spent
            raise OperationalError("SELECT 1", {}, Exception("lock wait timeout exceeded"))

    return registry


def test_permanent_failures_end_after_one_attempt_and_transient_ones_are_retried(
    engine: Engine,
) -> None:
    scope = uuid.uuid4().hex[:20]
    attempts: dict[int, list[int]] = {}
    with engine.begin() as conn:
        conn.execute(insert(payment_ledger).values(_ledger_row("o-1")))
    group = Group(f"g-{uuid.uuid4().hex[:10]}", topics=("pings",), jobs=("picky",))
    runner = JobRunner(
        engine, registry=_registry(attempts, scope), groups=[group], events=ch.EVENTS
    )
    stores_anything = engine.dialect.name == "sqlite"  # no length limits there
    expected_failed = 3 if stores_anything else 4
    with engine.begin() as conn:
        append(conn, [ch.ping("pings", n) for n in (1, 2, 3, 4, 5)], shards=ch.SHARDS)
    results = runner.drain()
    assert sum(r.outcome == "failed" for r in results) == expected_failed
    assert len(ch.failed_rows(engine, group.name)) == expected_failed
    failed = {int(_n(r)): r for r in ch.failed_rows(engine, group.name)}
    assert (failed[1].reason, failed[1].attempts) == ("invalid", 1)
    assert "cents" in failed[1].exception_message
    assert (failed[2].reason, failed[2].attempts) == ("integrity_error", 1)
    assert "payment_ledger" in failed[2].exception_message or engine.dialect.name == "mysql"
    if not stores_anything:
        assert (failed[3].reason, failed[3].attempts) == ("data_error", 1)
        assert "x" * 100 not in failed[3].exception_message
    assert (failed[5].reason, failed[5].attempts) == ("exception", 4)
    assert attempts[1] == attempts[2] == [1]
    assert attempts[4] == [1, 2, 3] and 4 not in failed
    assert attempts[5] == [1, 2, 3, 4]
    statuses = {r.status for r in ch.inbox_rows(engine, group.name)}
    assert statuses == {"failed", "done"}


def _n(row: Any) -> int:
    return int(json.loads(row.payload)["n"])


def _forged(webhook_id: str, **fields: Any) -> Envelope:
    """A payment notice produced without `outbox serve` (straight into the outbox)."""
    payload = {
        "gateway": "standard",
        "webhook_id": webhook_id,
        "kind": "succeeded",
        "gateway_type": "payment.succeeded",
        "payment_id": f"pay-{webhook_id}",
        "order_id": "o-2",
        "amount_cents": 2500,
        "sent_at": utcnow().isoformat(),
        **fields,
    }
    return Envelope(
        event_id=str(uuid.uuid4()),
        topic="payment-events",
        key=webhook_id,
        type=PaymentWebhookReceived.TYPE,
        payload=json.dumps(payload),
        occurred_at=utcnow(),
        headers={"schema_version": "1", "tenant_id": "t-1"},
    )


def test_payment_notices_no_retry_can_apply_fail_after_one_attempt(server_db: Engine) -> None:
    """A payment id reused on another order (accepted as `outbox serve` does), and forged
    notices with a negative amount, 10^30 cents and an invalid gateway name: each in failed
    jobs after one attempt (process-payment-webhook has 5 tries), nothing paid twice."""
    bus = CommandBus(server_db, shards=8)
    onboard(bus)
    product(bus, "p-1", stock=100)
    for order_id in ("o-1", "o-2"):
        bus.dispatch(order({"p-1": 1}, order_id=order_id))
    for webhook_id, order_id in (("w-1", "o-1"), ("w-2", "o-2")):
        notice = PaymentNotice(
            gateway="standard",
            webhook_id=webhook_id,
            kind="succeeded",
            gateway_type="payment.succeeded",
            payment_id="pay-1",  # the same payment id for two orders
            order_id=order_id,
            amount_cents=_total(server_db, order_id),
            currency="EUR",
            sent_at=utcnow(),
        )
        cmd = AcceptPaymentWebhook(notice=notice, scheme="standard-webhooks", body="{}", headers={})
        accept_webhook(bus, cmd)
    with server_db.begin() as conn:
        notices = [
            _forged("w-neg", amount_cents=-5),
            _forged("w-huge", amount_cents=10**30),
            _forged("w-gw", gateway="Not A Gateway!"),
        ]
        append(conn, notices, shards=8)
    results = JobRunner(server_db, events=registry).drain("payments")
    assert sum(r.outcome == "failed" for r in results) == 4  # four failed payment jobs
    rows = ch.failed_rows(server_db, "payments")
    assert [r.attempts for r in rows] == [1, 1, 1, 1]
    by_webhook = {json.loads(r.payload)["webhook_id"]: r for r in rows}
    # The two accepted notices run in either order (other partitions): the second fails.
    [reused] = [by_webhook[w] for w in ("w-1", "w-2") if w in by_webhook]
    assert reused.reason == "integrity_error"
    # A forged notice may be refused before its amount is read (no verified webhook row):
    # either way at once, never "exception" after five tries.
    for forged in ("w-neg", "w-huge", "w-gw"):
        assert by_webhook[forged].reason in {"invalid", "rejected", "not_verified"}, forged
    with server_db.connect() as conn:
        ledger = conn.execute(select(payment_ledger.c.order_id)).scalars().all()
    assert len(ledger) == 1  # one payment, one order


def _total(engine: Engine, order_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(select(orders.c.total_cents).where(orders.c.id == order_id)).scalar_one()
        )
