"""Money through the real receiver (`outbox serve`) and the payments group (consumers.testing,
no broker), on PostgreSQL: a notice in another currency or an unknown code is a failed job
for review and moves nothing; 4,900 JPY pays a JPY order of 4900, not an EUR order of
4,900 cents; lax amounts and repeated keys are refused before anything is stored; Stripe's
cumulative partial refunds end in the right ledger and order state."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from consumers import GROUPS, jobs
from consumers.messages import ScheduledJobDue
from consumers.testing import JobRunner
from domain import CommandBus
from domain.ordering import OrderLine, OrderStatus, PlaceOrder
from domain.schema import orders, payment_ledger, payment_webhooks
from tests.consumer_harness import failed_rows
from tests.queries import count_rows
from tests.scenario import onboard, product
from tests.webhook_helpers import (
    Server,
    payment_body,
    serve_env,
    serving,
    standard_headers,
    stripe_body,
    stripe_headers,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PAYMENTS = GROUPS["payments"]


def _place(engine: Engine) -> None:
    """o-1: 2 x 12.50 EUR (the default currency); o-eur: 4,900 cents; o-jpy: 4,900 JPY."""
    bus = CommandBus(engine, shards=8)
    onboard(bus)
    product(bus, "p-1", stock=100, price_cents=1250)
    product(bus, "p-2", stock=100, price_cents=4900)
    for order_id, pid, qty, currency in (
        ("o-1", "p-1", 2, None),
        ("o-eur", "p-2", 1, "EUR"),
        ("o-jpy", "p-2", 1, "JPY"),
    ):
        lines = [OrderLine(product_id=pid, quantity=qty)]
        bus.dispatch(
            PlaceOrder(
                order_id=order_id,
                tenant_id="t-1",
                customer_email="a@example.com",
                lines=lines,
                currency=currency,
            )
        )


def _runner(engine: Engine) -> JobRunner:
    return JobRunner(engine, registry=jobs, groups=[PAYMENTS])


def _drain(engine: Engine, runner: JobRunner | None = None) -> list[str]:
    return [r.outcome for r in (runner or _runner(engine)).drain(PAYMENTS.name)]


def _statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {row.id: row.status for row in conn.execute(select(orders.c.id, orders.c.status))}


def _ledger(engine: Engine) -> list[tuple[str, str, str, int, str | None]]:
    lg = payment_ledger
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                lg.c.order_id, lg.c.kind, lg.c.refund_id, lg.c.amount_cents, lg.c.currency
            ).order_by(lg.c.recorded_at, lg.c.refund_id)
        )
        return [(r.order_id, r.kind, r.refund_id, r.amount_cents, r.currency) for r in rows]


def _intent(pi: str, order_id: str, amount: int, currency: str) -> bytes:
    """A real-shaped Stripe payment_intent.succeeded (lower-case currency, as Stripe sends)."""
    obj = {
        "id": pi,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "currency": currency,
        "status": "succeeded",
        "metadata": {"order_id": order_id},
    }
    return stripe_body("payment_intent.succeeded", obj)


def _charge_refunded(total: int, refunds: list[tuple[str, int]], event_id: str) -> bytes:
    """A real-shaped Stripe charge.refunded: the cumulative amount_refunded and the refunds
    list, newest first (card and customer details included, as Stripe sends them)."""
    listed = [
        {
            "id": rid,
            "object": "refund",
            "amount": cents,
            "charge": "ch_1",
            "currency": "eur",
            "payment_intent": "pi_1",
            "status": "succeeded",
        }
        for rid, cents in refunds
    ]
    obj = {
        "id": "ch_1",
        "object": "charge",
        "amount": 2500,
        "amount_captured": 2500,
        "amount_refunded": total,
        "currency": "eur",
        "paid": True,
        "payment_intent": "pi_1",
        "refunded": total == 2500,
        "metadata": {"order_id": "o-1"},
        "billing_details": {"email": "wile@example.com", "name": "Wile E. Coyote"},
        "payment_method_details": {"card": {"brand": "visa", "last4": "4242"}},
        "refunds": {
            "object": "list",
            "data": listed,
            "has_more": False,
            "total_count": len(listed),
            "url": "/v1/charges/ch_1/refunds",
        },
    }
    return stripe_body("charge.refunded", obj, event_id=event_id)


def _stripe(server: Server, body: bytes) -> str:
    answer = server.webhook(body, stripe_headers(body), gateway="stripe")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


def _standard(server: Server, body: bytes) -> None:
    answer = server.webhook(body, standard_headers(body))
    assert answer.status_code == 200, answer.text


def test_money_in_another_or_an_unknown_currency_is_failed_for_review_and_jpy_pays_jpy(
    postgres_db: Engine, tmp_path: Path
) -> None:
    _place(postgres_db)
    env = serve_env(postgres_db.url.render_as_string(hide_password=False), tmp_path)
    with serving(env, tmp_path / "serve.log") as server:
        for payment_id, currency in (
            ("pay-jpy", "JPY"),
            ("pay-xyz", "XYZ"),
            ("pay-empty", ""),
            ("pay-lower", "jpy"),
        ):
            _standard(server, payment_body("succeeded", "o-1", payment_id, 2500, currency=currency))
        # The case: 4,900 JPY (about 30 EUR) for an order of 4,900 euro cents.
        assert _stripe(server, _intent("pi_eur", "o-eur", 4900, "jpy")) == "accepted"
        assert _stripe(server, _intent("pi_jpy", "o-jpy", 4900, "jpy")) == "accepted"
    outcomes = _drain(postgres_db)
    assert sorted(outcomes) == ["done"] + ["failed"] * 5  # at once, never retried
    rows = failed_rows(postgres_db, "payments")
    failed = {json.loads(row.payload)["payment_id"]: row for row in rows}
    assert {pid: row.reason for pid, row in failed.items()} == {
        "pay-jpy": "currency_mismatch",
        "pay-xyz": "unknown_currency",
        "pay-empty": "unknown_currency",
        "pay-lower": "unknown_currency",
        "pi_eur": "currency_mismatch",
    }
    assert "is in JPY, order o-eur is in EUR" in failed["pi_eur"].exception_message
    assert "'XYZ'" in failed["pay-xyz"].exception_message
    assert _statuses(postgres_db) == {
        "o-1": OrderStatus.PENDING,
        "o-eur": OrderStatus.PENDING,
        "o-jpy": OrderStatus.PAID,
    }
    assert _ledger(postgres_db) == [("o-jpy", "payment", "", 4900, "JPY")]
    # The refused notices are kept, as received, for the review.
    assert count_rows(postgres_db, payment_webhooks) == 6


def test_lax_amounts_and_repeated_keys_are_refused_before_anything_is_stored(
    postgres_db: Engine, tmp_path: Path
) -> None:
    _place(postgres_db)
    env = serve_env(postgres_db.url.render_as_string(hide_password=False), tmp_path)
    twice = (
        b'{"type": "payment.refunded", "type": "payment.succeeded", "data": {"payment_id": '
        b'"pay-1", "order_id": "o-1", "amount_cents": 2500, "currency": "EUR"}}'
    )
    bodies = [payment_body("succeeded", "o-1", "pay-1", a) for a in ("2500", True, 2500.0)]  # type: ignore[arg-type]
    bodies.append(twice)
    with serving(env, tmp_path / "serve.log") as server:
        for body in bodies:
            answer = server.webhook(body, standard_headers(body))
            assert answer.status_code == 400, answer.text
        refund = _charge_refunded(1000, [("re_1", 1000)], "evt_str").replace(
            b'"amount_refunded": 1000', b'"amount_refunded": "1000"'
        )
        assert server.webhook(refund, stripe_headers(refund), gateway="stripe").status_code == 400
        errors = [line for line in server.log_lines() if line.get("level") == "error"]
    assert count_rows(postgres_db, payment_webhooks) == 0
    assert errors == []
    assert _drain(postgres_db) == []
    assert _statuses(postgres_db)["o-1"] == OrderStatus.PENDING


def test_stripe_partial_refunds_then_the_last_one_end_refunded_and_reconciled(
    postgres_db: Engine, tmp_path: Path
) -> None:
    """Given o-1 paid 2,500 through Stripe, When charge.refunded comes with 1,000, 1,500
    (redelivered, and sent again under a new event id) and 2,500, Then the ledger holds the
    payment and three refunds, the order went PARTIALLY_REFUNDED then REFUNDED, and the
    reconciliation finds nothing."""
    _place(postgres_db)
    env = serve_env(postgres_db.url.render_as_string(hide_password=False), tmp_path)
    second = _charge_refunded(1500, [("re_2", 500), ("re_1", 1000)], "evt_2")
    runner = _runner(postgres_db)
    with serving(env, tmp_path / "serve.log") as server:
        assert _stripe(server, _intent("pi_1", "o-1", 2500, "eur")) == "accepted"
        assert _stripe(server, _charge_refunded(1000, [("re_1", 1000)], "evt_1")) == "accepted"
        assert _drain(postgres_db, runner) == ["done", "done"]
        assert _statuses(postgres_db)["o-1"] == OrderStatus.PARTIALLY_REFUNDED
        assert _stripe(server, second) == "accepted"
        assert _stripe(server, second) == "duplicate"
        again = second.replace(b'"evt_2"', f'"evt_{uuid.uuid4().hex[:8]}"'.encode())
        assert _stripe(server, again) == "accepted"
        assert _drain(postgres_db, runner) == ["done", "done"]
        assert _statuses(postgres_db)["o-1"] == OrderStatus.PARTIALLY_REFUNDED
        last = [("re_3", 1000), ("re_2", 500), ("re_1", 1000)]
        assert _stripe(server, _charge_refunded(2500, last, "evt_3")) == "accepted"
    assert _drain(postgres_db, runner) == ["done"]
    assert _statuses(postgres_db)["o-1"] == OrderStatus.REFUNDED
    assert _ledger(postgres_db) == [
        ("o-1", "payment", "", 2500, "EUR"),
        ("o-1", "refund", "re_1", 1000, "EUR"),
        ("o-1", "refund", "re_2", 500, "EUR"),
        ("o-1", "refund", "re_3", 1000, "EUR"),
    ]
    w = payment_webhooks
    with postgres_db.connect() as conn:
        outcomes = list(conn.execute(select(w.c.outcome).order_by(w.c.received_at)).scalars())
    assert outcomes == ["applied", "applied", "applied", "unchanged", "applied"]
    with postgres_db.connect() as conn:  # personal data of the body is not in the ledger
        assert "wile" not in str(conn.execute(select(payment_ledger)).all()).lower()
    due = ScheduledJobDue(job="reconcile-payments", slot=datetime(2026, 12, 7, 3, tzinfo=UTC))
    assert runner.dispatch("reconcile-payments", due)
    assert [r.outcome for r in runner.drain(PAYMENTS.name)] == ["done"]
    assert failed_rows(postgres_db, "payments") == []
