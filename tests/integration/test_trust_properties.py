"""Hostile field values against the database's truth, on every backend: whatever an export
request or a payment notice claims, a claim that differs from its row is refused and nothing
is written (ADR 014). Hypothesis chooses the claims."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from consumers.trust import RecordMismatch
from domain import CommandBus, RuleViolation
from domain.payments import (
    AcceptPaymentWebhook,
    ApplyPaymentNotice,
    OrderOfAnotherTenant,
    PaymentNotice,
    PaymentWebhookReceived,
    UnverifiedNotice,
    accept_webhook,
    verified_notice,
)
from domain.reporting import ExportStatus, RequestSalesExport, SalesExportRequested
from domain.schema import orders
from tests.export_helpers import DAY0, export_row, job_config, run_job
from tests.scenario import ensure_tenant, onboard, order, product

pytestmark = pytest.mark.integration
LAST = DAY0 + timedelta(days=9)
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Text a database can hold (PostgreSQL refuses NUL; surrogates are not UTF-8).
TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=80)


@HYPOTHESIS
@given(
    claims=st.tuples(
        st.one_of(st.just("t-1"), st.just("t-2"), TEXT),
        st.sampled_from(["csv", "xlsx"]),
        st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1)),
        st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1)),
    )
)
def test_an_export_request_claiming_anything_but_its_row_writes_nothing(
    engine: Engine, bus: CommandBus, tmp_path: Path, claims: tuple[str, Any, date, date]
) -> None:
    tenant, kind, first, last = claims
    assume(claims != ("t-1", "csv", DAY0, LAST))
    ensure_tenant(bus, "t-1")
    made = bus.dispatch(
        RequestSalesExport(tenant_id="t-1", format="csv", period_from=DAY0, period_to=LAST)
    )
    forged = SalesExportRequested(tenant_id=tenant, kind=kind, period_from=first, period_to=last)
    with pytest.raises(RecordMismatch) as refused:
        run_job(
            engine, bus, "generate-sales-export", forged, made.aggregate_id, job_config(tmp_path)
        )
    assert refused.value.reason == "record_mismatch"
    assert export_row(engine, made.aggregate_id).status == ExportStatus.REQUESTED
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


NOTICE = PaymentNotice(
    gateway="standard",
    webhook_id="msg-1",
    kind="succeeded",
    gateway_type="payment.succeeded",
    payment_id="pay-1",
    order_id="o-1",
    amount_cents=2500,
    currency="EUR",
    sent_at=datetime(2026, 12, 6, 12, tzinfo=UTC),
)


def _received(bus: CommandBus, engine: Engine) -> PaymentWebhookReceived:
    """Order o-1 of t-1 and a verified webhook paying it (made once per database: the
    engine outlives hypothesis' examples), as its record says it."""
    with engine.connect() as conn:
        placed = conn.execute(select(orders.c.id).where(orders.c.id == "o-1")).first()
    if placed is None:
        onboard(bus)
        product(bus, "p-1")
        bus.dispatch(order({"p-1": 2}, order_id="o-1"))
        cmd = AcceptPaymentWebhook(notice=NOTICE, scheme="standard-webhooks", body="{}", headers={})
        accept_webhook(bus, cmd)
    return PaymentWebhookReceived(**NOTICE.model_dump())


CHANGES: dict[str, Any] = {
    "kind": st.sampled_from(["failed", "refunded", "other"]),
    "gateway_type": TEXT,
    "payment_id": st.one_of(st.none(), TEXT),
    "order_id": st.one_of(st.none(), st.just("o-2"), TEXT),
    "amount_cents": st.one_of(st.none(), st.integers(-(10**30), 10**30)),
    "currency": st.one_of(st.just("eur"), TEXT),
    "reason": TEXT,
    "sent_at": st.datetimes(timezones=st.just(UTC)),
}


@HYPOTHESIS
@given(change=st.sampled_from(sorted(CHANGES)).flatmap(lambda f: st.tuples(st.just(f), CHANGES[f])))
def test_a_notice_differing_from_its_verified_webhook_in_any_field_is_refused(
    engine: Engine, bus: CommandBus, change: tuple[str, Any]
) -> None:
    field, value = change
    received = _received(bus, engine)
    with engine.connect() as conn:
        assert verified_notice(conn, received).tenant_id == "t-1"  # the record as accepted
    assume(getattr(received, field) != value)
    forged = received.model_copy(update={field: value})
    with engine.connect() as conn, pytest.raises(UnverifiedNotice) as refused:
        verified_notice(conn, forged)
    assert refused.value.mismatch


@HYPOTHESIS
@given(webhook_id=TEXT.filter(lambda s: s.strip() != "msg-1"))
def test_a_notice_naming_no_verified_webhook_is_not_verified(
    engine: Engine, bus: CommandBus, webhook_id: str
) -> None:
    received = _received(bus, engine).model_copy(update={"webhook_id": webhook_id})
    with engine.connect() as conn, pytest.raises(UnverifiedNotice) as refused:
        verified_notice(conn, received)
    assert not refused.value.mismatch or webhook_id.lower() == "msg-1"


def test_an_order_of_another_tenant_than_its_webhook_row_is_not_paid(
    engine: Engine, bus: CommandBus
) -> None:
    received = _received(bus, engine)
    with pytest.raises(OrderOfAnotherTenant):
        bus.dispatch(ApplyPaymentNotice.of(received, tenant_id="t-2"))
    assert issubclass(OrderOfAnotherTenant, RuleViolation)  # failed at once, never retried
    with engine.connect() as conn:
        status = conn.execute(select(orders.c.status).where(orders.c.id == "o-1")).scalar_one()
    assert status == "PENDING"
