"""Several refunds per payment, on every backend: keyed by refund id, or derived from the
cumulative total Stripe sends; never more than the payment; PARTIALLY_REFUNDED then
REFUNDED; redeliveries change nothing; the reconciliation and a rebuild agree."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from domain import CommandBus, RuleViolation, rebuild_projections, registry
from domain.ordering import OrderStatus
from domain.payments import ApplyPaymentNotice, CurrencyMismatch, UnknownCurrency
from domain.reconciliation import ledger_mismatches
from domain.schema import orders, payment_ledger
from tests.scenario import onboard, order, product

pytestmark = pytest.mark.integration
TOTAL = 2500


def _placed(bus: CommandBus) -> None:
    onboard(bus)
    product(bus, "p-1", stock=10, price_cents=1250)
    bus.dispatch(order({"p-1": 2}, order_id="o-1"))


def _apply(bus: CommandBus, kind: str, **fields: Any) -> int:
    """Events the notice produced (0: nothing changed)."""
    notice = {"gateway": "stripe", "kind": kind, "payment_id": "pi_1", "order_id": "o-1"}
    notice |= {"currency": "EUR", **fields}
    return len(bus.dispatch(ApplyPaymentNotice.model_validate(notice)).events)


def _paid(bus: CommandBus) -> None:
    _placed(bus)
    assert _apply(bus, "succeeded", amount_cents=TOTAL) == 1


def _state(engine: Engine) -> tuple[str, int, int]:
    o = orders
    with engine.connect() as conn:
        row = conn.execute(
            select(o.c.status, o.c.paid_cents, o.c.refunded_cents).where(o.c.id == "o-1")
        ).one()
    return (row.status, row.paid_cents, row.refunded_cents)


def _refunds(engine: Engine) -> list[tuple[str, int, str | None]]:
    lg = payment_ledger
    with engine.connect() as conn:
        rows = conn.execute(
            select(lg.c.refund_id, lg.c.amount_cents, lg.c.currency)
            .where(lg.c.kind == "refund")
            .order_by(lg.c.recorded_at, lg.c.refund_id)
        ).all()
    return [(r.refund_id, r.amount_cents, r.currency) for r in rows]


def _clean(engine: Engine) -> bool:
    with engine.connect() as conn:
        return list(ledger_mismatches(conn)) == []


def _cumulative(bus: CommandBus, total: int, *listed: tuple[str, int]) -> int:
    lines = [{"refund_id": rid, "amount_cents": cents} for rid, cents in listed]
    return _apply(bus, "refunded", refunded_total_cents=total, refunds=lines)


def test_stripe_s_cumulative_partial_refunds_then_the_last_one(bus: CommandBus) -> None:
    """Given a paid order of 2,500, When charge.refunded says 1,000, then 1,500 (refunds
    re_1, re_2), then 2,500 (re_3 added), Then each refund is one ledger entry and the
    order goes PARTIALLY_REFUNDED, then REFUNDED."""
    _paid(bus)
    assert _cumulative(bus, 1000, ("re_1", 1000)) == 1
    assert _state(bus.engine) == (OrderStatus.PARTIALLY_REFUNDED, TOTAL, 1000)
    # Stripe lists the newest refund first.
    assert _cumulative(bus, 1500, ("re_2", 500), ("re_1", 1000)) == 1
    assert _state(bus.engine) == (OrderStatus.PARTIALLY_REFUNDED, TOTAL, 1500)
    assert _cumulative(bus, 2500, ("re_3", 1000), ("re_2", 500), ("re_1", 1000)) == 1
    assert _state(bus.engine) == (OrderStatus.REFUNDED, TOTAL, TOTAL)
    assert _refunds(bus.engine) == [
        ("re_1", 1000, "EUR"),
        ("re_2", 500, "EUR"),
        ("re_3", 1000, "EUR"),
    ]
    assert _clean(bus.engine)


def test_a_redelivered_or_older_cumulative_refund_changes_nothing(bus: CommandBus) -> None:
    _paid(bus)
    assert _cumulative(bus, 1500, ("re_2", 500), ("re_1", 1000)) == 2
    before = (_state(bus.engine), _refunds(bus.engine))
    assert _cumulative(bus, 1500, ("re_2", 500), ("re_1", 1000)) == 0  # redelivered
    assert _cumulative(bus, 1000, ("re_1", 1000)) == 0  # the older event, late
    assert _cumulative(bus, 1500) == 0  # the same total without the list
    assert (_state(bus.engine), _refunds(bus.engine)) == before
    assert before[1] == [("re_1", 1000, "EUR"), ("re_2", 500, "EUR")]


def test_a_cumulative_total_without_refund_ids_gives_what_the_ledger_lacks(
    bus: CommandBus,
) -> None:
    """Given totals only (Stripe without the expanded refunds list), Then each new total
    adds its difference once, and a list arriving later is not counted twice."""
    _paid(bus)
    assert _cumulative(bus, 1000) == 1
    assert _cumulative(bus, 1500, ("re_2", 500), ("re_1", 1000)) == 1  # re_1 was the 1,000
    assert _refunds(bus.engine) == [
        ("cumulative-1000", 1000, "EUR"),
        ("cumulative-1500", 500, "EUR"),
    ]
    assert _state(bus.engine) == (OrderStatus.PARTIALLY_REFUNDED, TOTAL, 1500)
    with pytest.raises(RuleViolation, match="exceeds"):
        _cumulative(bus, TOTAL + 1)  # never more than the payment
    assert _state(bus.engine) == (OrderStatus.PARTIALLY_REFUNDED, TOTAL, 1500)
    assert _clean(bus.engine)


def test_refunds_sent_one_by_one_are_keyed_by_their_id(bus: CommandBus) -> None:
    _paid(bus)
    assert _apply(bus, "refunded", refund_id="r-1", amount_cents=1000) == 1
    assert _apply(bus, "refunded", refund_id="r-1", amount_cents=1000) == 0  # redelivered
    assert _apply(bus, "refunded", refund_id="r-2", amount_cents=500) == 1
    with pytest.raises(RuleViolation, match=r"refund r-2 gave back 5\.00 EUR already"):
        _apply(bus, "refunded", refund_id="r-2", amount_cents=700)
    with pytest.raises(RuleViolation, match="exceeds the 1000 cents still paid"):
        _apply(bus, "refunded", refund_id="r-3", amount_cents=1001)
    assert _apply(bus, "refunded", refund_id="r-3", amount_cents=1000) == 1
    assert _state(bus.engine) == (OrderStatus.REFUNDED, TOTAL, TOTAL)
    before = (_state(bus.engine), _refunds(bus.engine))
    with bus.engine.begin() as conn:
        rebuild_projections(conn, registry)
    assert (_state(bus.engine), _refunds(bus.engine)) == before
    assert _clean(bus.engine)


def test_the_reconciliation_sums_every_refund_of_an_order(bus: CommandBus) -> None:
    _paid(bus)
    _cumulative(bus, 1500, ("re_2", 500), ("re_1", 1000))
    assert _clean(bus.engine)
    with bus.engine.begin() as conn:  # one refund's entry lost by hand
        lg = payment_ledger
        conn.execute(update(lg).where(lg.c.refund_id == "re_2").values(amount_cents=0))
    with bus.engine.connect() as conn:
        [found] = ledger_mismatches(conn)
    assert (found.refunded_cents, found.ledger_refunded_cents) == (1500, 1000)


def test_money_in_another_or_an_unknown_currency_is_never_applied(bus: CommandBus) -> None:
    _placed(bus)
    with pytest.raises(CurrencyMismatch, match="is in JPY, order o-1 is in EUR"):
        _apply(bus, "succeeded", amount_cents=TOTAL, currency="JPY")
    for code in ("jpy", "", "XYZ", None):
        with pytest.raises(UnknownCurrency, match="ISO 4217"):
            _apply(bus, "succeeded", amount_cents=TOTAL, currency=code)
    assert _state(bus.engine) == (OrderStatus.PENDING, 0, 0)
    # An order without a currency is in the default one (the DEFAULT_CURRENCY setting).
    assert _apply(bus, "succeeded", amount_cents=TOTAL, currency="CHF", default_currency="CHF")
    with pytest.raises(CurrencyMismatch, match="order o-1 is in CHF"):
        _apply(bus, "refunded", refund_id="r-1", amount_cents=10, default_currency="CHF")
