"""Payments in the domain, on every backend: a webhook accepted in one transaction (once),
notices applied to orders once each, refunds, and the reconciliation against the ledger."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, insert, select, update

from domain import CommandBus, RuleViolation, rebuild_projections, registry
from domain.ordering import CancelOrder, OrderStatus
from domain.payments import (
    AcceptPaymentWebhook,
    ApplyPaymentNotice,
    PaymentNotice,
    RefundBeforePayment,
    accept_webhook,
    ledger_mismatches,
)
from domain.schema import domain_events, orders, payment_ledger, payment_webhooks
from outbox import outbox_table
from tests.queries import count_rows
from tests.scenario import onboard, order, product

pytestmark = pytest.mark.integration
SENT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _accept(bus: CommandBus, webhook_id: str, **notice: object) -> bool:
    fields = {"kind": "succeeded", "payment_id": "pay-1", "order_id": "o-1", "amount_cents": 100}
    fields["currency"] = "EUR"
    fields |= notice
    cmd = AcceptPaymentWebhook(
        notice=PaymentNotice(
            gateway="standard",
            webhook_id=webhook_id,
            gateway_type="payment.succeeded",
            sent_at=SENT,
            **fields,  # type: ignore[arg-type]
        ),
        scheme="standard-webhooks",
        body=' {"raw": "body, kept byte for byte"} ',
        headers={"webhook-id": webhook_id},
    )
    return not accept_webhook(bus, cmd).duplicate


def _placed(bus: CommandBus) -> int:
    """Order o-1 of tenant t-1 for 2 x 1250 cents."""
    onboard(bus)
    product(bus, "p-1")
    bus.dispatch(order({"p-1": 2}, order_id="o-1"))
    return 2500


def _apply(bus: CommandBus, kind: str, amount: int = 0, payment_id: str = "pay-1") -> int:
    """Events the notice produced (0: no change)."""
    notice = ApplyPaymentNotice(
        gateway="standard",
        kind=kind,
        payment_id=payment_id,
        order_id="o-1",
        amount_cents=amount,
        currency="EUR",
    )  # type: ignore[arg-type]
    return len(bus.dispatch(notice).events)


def _order(engine: Engine) -> tuple[str, int, int, str | None]:
    o = orders
    with engine.connect() as conn:
        row = conn.execute(
            select(o.c.status, o.c.paid_cents, o.c.refunded_cents, o.c.payment_failure).where(
                o.c.id == "o-1"
            )
        ).one()
    return row.status, row.paid_cents, row.refunded_cents, row.payment_failure


def _ledger(engine: Engine) -> list[tuple[str, str, int]]:
    lg = payment_ledger
    with engine.connect() as conn:
        rows = conn.execute(
            select(lg.c.payment_id, lg.c.kind, lg.c.amount_cents).order_by(lg.c.kind)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_accepting_writes_the_row_the_event_and_its_outbox_row_once(bus: CommandBus) -> None:
    engine = bus.engine
    assert _accept(bus, "msg-1")
    assert not _accept(bus, "msg-1")  # a redelivery: nothing more
    assert count_rows(engine, payment_webhooks) == 1
    assert (
        count_rows(engine, domain_events, domain_events.c.type == "payment.webhook_received") == 1
    )
    with engine.connect() as conn:
        row = conn.execute(select(outbox_table)).one()
        stored = conn.execute(select(payment_webhooks.c.body, payment_webhooks.c.headers)).one()
    assert (row.topic, row.type) == ("payment-events", "payment.webhook_received")
    assert json.loads(row.payload)["order_id"] == "o-1"
    assert "raw" not in row.payload  # the raw body stays in the webhook row
    assert stored.body == ' {"raw": "body, kept byte for byte"} '
    assert json.loads(stored.headers) == {"webhook-id": "msg-1"}


def test_the_webhook_row_names_the_tenant_of_the_order_it_names(bus: CommandBus) -> None:
    """The notice carries no tenant: the row takes its order's, read in the INSERT itself;
    none for an order the database does not hold, or a notice naming no order."""
    _placed(bus)
    assert _accept(bus, "msg-known")
    assert _accept(bus, "msg-unknown", order_id="o-nobody")
    assert _accept(bus, "msg-none", kind="other", order_id=None, payment_id=None)
    with bus.engine.connect() as conn:
        tenants = dict(
            conn.execute(select(payment_webhooks.c.webhook_id, payment_webhooks.c.tenant_id)).all()
        )
    assert tenants == {"msg-known": "t-1", "msg-unknown": None, "msg-none": None}


def test_concurrent_deliveries_of_one_webhook_write_it_once(server_db: Engine) -> None:
    bus = CommandBus(server_db, shards=8)
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(_accept(bus, "msg-race"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]
    assert count_rows(bus.engine, outbox_table) == 1


def test_a_payment_pays_the_order_once_however_often_it_comes(bus: CommandBus) -> None:
    total = _placed(bus)
    assert _apply(bus, "succeeded", total) == 1
    assert _apply(bus, "succeeded", total) == 0
    assert _order(bus.engine)[:3] == (OrderStatus.PAID, total, 0)
    assert _ledger(bus.engine) == [("pay-1", "payment", total)]
    with pytest.raises(RuleViolation, match="refund it at the gateway"):
        _apply(bus, "succeeded", total, payment_id="pay-2")  # a second charge: for review
    assert len(_ledger(bus.engine)) == 1


def test_a_wrong_amount_or_a_cancelled_order_is_refused(bus: CommandBus) -> None:
    total = _placed(bus)
    with pytest.raises(RuleViolation, match="totals 2500"):
        _apply(bus, "succeeded", total - 1)
    bus.dispatch(CancelOrder(order_id="o-1"))
    with pytest.raises(RuleViolation, match="is CANCELLED"):
        _apply(bus, "succeeded", total)
    assert _ledger(bus.engine) == []


def test_a_failure_is_recorded_on_the_order_once(bus: CommandBus) -> None:
    _placed(bus)
    assert _apply(bus, "failed") == 1
    assert _apply(bus, "failed") == 0
    assert _order(bus.engine) == (OrderStatus.PENDING, 0, 0, "standard pay-1: declined")


def test_a_refund_before_its_payment_waits_and_then_applies_once(bus: CommandBus) -> None:
    total = _placed(bus)
    with pytest.raises(RefundBeforePayment):
        _apply(bus, "refunded", total)
    assert _apply(bus, "succeeded", total) == 1
    assert _apply(bus, "refunded", 1000) == 1
    assert _apply(bus, "refunded", 1000) == 0
    assert _order(bus.engine)[:3] == (OrderStatus.PARTIALLY_REFUNDED, total, 1000)
    # A refund without a refund id is the payment's only one: another amount is reviewed.
    with pytest.raises(RuleViolation, match="sent without an id"):
        _apply(bus, "refunded", total)
    assert _ledger(bus.engine) == [("pay-1", "payment", total), ("pay-1", "refund", 1000)]


def test_a_full_refund_makes_the_order_refunded_and_survives_a_rebuild(bus: CommandBus) -> None:
    total = _placed(bus)
    _apply(bus, "succeeded", total)
    _apply(bus, "refunded", total)
    before = (_order(bus.engine), _ledger(bus.engine))
    assert before[0][:3] == (OrderStatus.REFUNDED, total, total)
    with bus.engine.begin() as conn:
        rebuild_projections(conn, registry)
    assert (_order(bus.engine), _ledger(bus.engine)) == before


def test_the_reconciliation_finds_hand_made_mismatches_and_orphans(bus: CommandBus) -> None:
    total = _placed(bus)
    _apply(bus, "succeeded", total)
    with bus.engine.connect() as conn:
        assert list(ledger_mismatches(conn, chunk=1)) == []
    with bus.engine.begin() as conn:
        conn.execute(update(orders).values(refunded_cents=700))
        row = dict(conn.execute(select(payment_ledger)).one()._mapping)
        conn.execute(insert(payment_ledger).values({**row, "payment_id": "x", "order_id": "o-9"}))
    with bus.engine.connect() as conn:
        found = {m.order_id: m for m in ledger_mismatches(conn, chunk=1)}
    assert set(found) == {"o-1", "o-9"}
    assert (found["o-1"].refunded_cents, found["o-1"].ledger_refunded_cents) == (700, 0)
    assert (found["o-9"].paid_cents, found["o-9"].ledger_paid_cents) == (0, total)
    with bus.engine.begin() as conn:
        conn.execute(delete(payment_ledger).where(payment_ledger.c.order_id == "o-1"))
    with bus.engine.connect() as conn:
        assert next(ledger_mismatches(conn)).ledger_paid_cents == 0


def test_on_postgresql_an_accept_is_one_statement_in_autocommit(postgres_db: Engine) -> None:
    """The webhook row, its event and outbox row (and the relays' NOTIFY) in ONE statement,
    with no BEGIN or COMMIT of its own: one round trip (issue 26 item 4)."""
    bus = CommandBus(postgres_db, shards=4)
    _placed(bus)
    statements: list[tuple[str, bool]] = []

    def record(_conn: object, cursor: Any, statement: str, *_args: object) -> None:
        # psycopg sends BEGIN (a round trip) before a statement unless in autocommit.
        statements.append((statement, cursor.connection.autocommit))

    event.listen(postgres_db, "before_cursor_execute", record)
    try:
        assert _accept(bus, "msg-one")
    finally:
        event.remove(postgres_db, "before_cursor_execute", record)
    assert len(statements) == 1
    ((statement, autocommit),) = statements
    assert statement.startswith("WITH") and "pg_notify" in statement
    assert autocommit is True
    with postgres_db.connect() as conn:
        tenant = conn.execute(
            select(payment_webhooks.c.tenant_id).where(payment_webhooks.c.webhook_id == "msg-one")
        ).scalar_one()
    assert tenant == "t-1"
    assert (
        count_rows(postgres_db, outbox_table, outbox_table.c.type == "payment.webhook_received")
        == 1
    )


def test_with_hooks_before_the_commit_an_accept_keeps_its_transaction(
    postgres_db: Engine,
) -> None:
    """A hook that fails before the commit (a crash test's) still leaves nothing behind."""
    bus = CommandBus(postgres_db, shards=4)
    _placed(bus)

    def explode(*_args: object) -> None:
        raise RuntimeError("dies before commit")

    bus.hooks.before_commit.append(explode)
    with pytest.raises(RuntimeError, match="dies before commit"):
        _accept(bus, "msg-hooked")
    assert count_rows(postgres_db, payment_webhooks) == 0
