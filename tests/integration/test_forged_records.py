"""Forged records produced straight to the embedded broker: an export or report naming
another tenant or a period the command refuses, payment notices the database never verified.
Each ends in failed jobs with its reason and changes nothing; the legit records relayed
afterwards still do their work (ADR 014)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from consumers import GROUPS, jobs
from domain import CommandBus, registry
from domain.ordering import OrderLine, OrderStatus, PlaceOrder
from domain.payments import AcceptPaymentWebhook, PaymentNotice, PaymentWebhookReceived
from domain.reporting import (
    ExportStatus,
    RequestSalesExport,
    RequestSalesReport,
    SalesExportRequested,
    SalesReportRequested,
)
from domain.schema import orders, payment_ledger, payment_webhooks
from infra.broker import EmbeddedBroker
from jobs.analytics import TenantAnalyticsSyncRequested
from outbox.types import utcnow
from tests.consumer_harness import harness, wait_for
from tests.export_helpers import DAY0, expected_rows, export_row, job_config, load_orders, read_csv
from tests.forged import failed_reasons, forge
from tests.kafka_helpers import fresh_group
from tests.scenario import ensure_tenant, onboard, order, product

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXPORTS, PAYMENTS = GROUPS["exports"], GROUPS["payments"]
LAST = DAY0 + timedelta(days=9)


def _all_failed(engine: Engine, group: str, count: int) -> dict[str, tuple[str | None, str]]:
    """The group's failed jobs, once there are `count` of them."""
    wait_for(lambda: len(failed_reasons(engine, group)) == count, timeout_s=60, what="failed")
    return failed_reasons(engine, group)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_forged_export_and_report_requests_fail_as_record_mismatch_and_write_nothing(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    """Given acme's CSV export and PDF report requested, When records keyed to them name
    globex, a reversed period, 1926-today or another format, Then each is a failed job
    (record_mismatch), no file is written and both stay requested; the real requests,
    relayed afterwards, give acme's own data."""
    bus = CommandBus(postgres_db, shards=8)
    for tenant, seed in (("acme", 1), ("globex", 2)):
        ensure_tenant(bus, tenant)
        load_orders(postgres_db, tenant, 40, seed=seed)
    period = {"period_from": DAY0, "period_to": LAST}
    export_id = bus.dispatch(RequestSalesExport(tenant_id="acme", format="csv", **period))
    report_id = bus.dispatch(RequestSalesReport(tenant_id="acme", **period))
    today = utcnow().date()
    forged_exports = [
        SalesExportRequested(tenant_id="globex", kind="csv", **period),
        SalesExportRequested(tenant_id="acme", kind="csv", period_from=LAST, period_to=DAY0),
        SalesExportRequested(
            tenant_id="acme", kind="csv", period_from=date(1926, 1, 1), period_to=today
        ),
        SalesExportRequested(tenant_id="acme", kind="xlsx", **period),
    ]
    forged_reports = [
        SalesReportRequested(tenant_id="globex", **period),
        SalesReportRequested(tenant_id="acme", period_from=LAST, period_to=DAY0),
        SalesReportRequested(tenant_id="acme", period_from=date(1926, 1, 1), period_to=today),
    ]
    bootstrap = kafka.bootstrap_servers
    exports = fresh_group(bootstrap, EXPORTS, jobs)  # the broker may be shared
    sent = [
        forge(bootstrap, "export-events", export_id.aggregate_id, e) for e in forged_exports
    ] + [forge(bootstrap, "export-events", report_id.aggregate_id, e) for e in forged_reports]
    config = job_config(tmp_path)
    with harness(postgres_db, bootstrap, exports, jobs, events=registry, job_config=config) as h:
        h.start_worker()
        failed = _all_failed(postgres_db, exports.name, len(sent))
        assert {failed[ce_id][1] for ce_id in sent} == {"record_mismatch"}
        assert _files(tmp_path) == []
        for made in (export_id, report_id):
            assert export_row(postgres_db, made.aggregate_id).status == ExportStatus.REQUESTED
        h.start_relay()  # the real requests, as the outbox holds them
        wait_for(
            lambda: (
                {export_row(postgres_db, m.aggregate_id).status for m in (export_id, report_id)}
                == {ExportStatus.READY}
            ),
            timeout_s=60,
            what="the real export and report",
        )
    assert len(failed_reasons(postgres_db, exports.name)) == len(sent)
    row = export_row(postgres_db, export_id.aggregate_id)
    assert row.path.startswith("acme/")
    _, rows = read_csv(tmp_path / row.path)
    assert rows == expected_rows(postgres_db, "acme", DAY0, LAST)


def _orders(bus: CommandBus) -> None:
    """o-1 of t-1 (2,500 cents) and o-2 of t-2 (1,250 cents)."""
    onboard(bus, "t-1")
    onboard(bus, "t-2")
    product(bus, "p-1", stock=100)
    product(bus, "p-2", tenant_id="t-2", stock=100)
    bus.dispatch(order({"p-1": 2}, order_id="o-1"))
    line = OrderLine(product_id="p-2", quantity=1)
    bus.dispatch(
        PlaceOrder(tenant_id="t-2", customer_email="b@example.com", lines=[line], order_id="o-2")
    )


def _notice(webhook_id: str, **changes: Any) -> PaymentNotice:
    fields: dict[str, Any] = {
        "gateway": "standard",
        "webhook_id": webhook_id,
        "kind": "succeeded",
        "gateway_type": "payment.succeeded",
        "payment_id": "pay-1",
        "order_id": "o-1",
        "amount_cents": 2500,
        "currency": "EUR",
        "sent_at": datetime(2026, 12, 6, 12, 0, tzinfo=utcnow().tzinfo),
    }
    return PaymentNotice(**(fields | changes))


def _statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(orders.c.id, orders.c.status)).all())


def test_forged_payment_notices_fail_and_move_no_money(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    """Given a verified webhook for o-1 accepted but not yet relayed, When notices are
    produced straight to payment-events (one with no webhook row, one naming another
    tenant's order under the verified webhook's id, one with another amount), Then each
    fails (not_verified, record_mismatch) and nothing is paid; the real notice, relayed
    afterwards, pays o-1 once."""
    from domain.payments import accept_webhook

    bus = CommandBus(postgres_db, shards=8)
    _orders(bus)
    accepted = _notice("msg-1")
    cmd = AcceptPaymentWebhook(notice=accepted, scheme="standard-webhooks", body="{}", headers={})
    assert not accept_webhook(bus, cmd).duplicate
    forged = {
        "not_verified": _notice("msg-never-received"),
        "other_tenant": _notice("msg-1", order_id="o-2", amount_cents=1250),
        "other_amount": _notice("msg-1", amount_cents=1),
    }
    payments = fresh_group(kafka.bootstrap_servers, PAYMENTS, jobs)  # the broker may be shared
    sent = {
        name: forge(
            kafka.bootstrap_servers,
            "payment-events",
            "webhook-key",
            PaymentWebhookReceived(**notice.model_dump()),
        )
        for name, notice in forged.items()
    }
    with harness(postgres_db, kafka.bootstrap_servers, payments, jobs, events=registry) as h:
        h.start_worker()
        failed = _all_failed(postgres_db, payments.name, len(sent))
        assert {name: failed[ce_id][1] for name, ce_id in sent.items()} == {
            "not_verified": "not_verified",
            "other_tenant": "record_mismatch",
            "other_amount": "record_mismatch",
        }
        assert _statuses(postgres_db) == {"o-1": OrderStatus.PENDING, "o-2": OrderStatus.PENDING}
        h.start_relay()
        wait_for(
            lambda: _statuses(postgres_db)["o-1"] == OrderStatus.PAID,
            timeout_s=60,
            what="the verified notice applied",
        )
    assert _statuses(postgres_db)["o-2"] == OrderStatus.PENDING
    with postgres_db.connect() as conn:
        ledger = conn.execute(select(payment_ledger.c.order_id, payment_ledger.c.amount_cents))
        assert [tuple(r) for r in ledger] == [("o-1", 2500)]
        tenant = conn.execute(select(payment_webhooks.c.tenant_id)).scalar_one()
    assert tenant == "t-1"  # recorded at acceptance, from the order the notice named
    assert len(failed_reasons(postgres_db, payments.name)) == len(sent)


def test_forged_interactions_and_rollup_requests_count_nothing(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    """Given one real interaction of t-1 (not yet relayed), When records claim it for
    another tenant or visitor, name no interaction, or ask a rollup for a tenant that does
    not exist, Then each fails with its reason and no visitor or rollup row is written;
    the real interaction, relayed afterwards, counts once with its own time."""
    from domain.analytics import InteractionRecorded, RecordInteraction
    from domain.schema import interactions, tenant_daily_analytics, visitor_activity

    bus = CommandBus(postgres_db, shards=8)
    onboard(bus, "t-1")
    onboard(bus, "t-2")
    real = bus.dispatch(RecordInteraction(tenant_id="t-1", visitor_id="v1", kind="page_view"))
    bootstrap = kafka.bootstrap_servers
    analytics = fresh_group(bootstrap, GROUPS["analytics"], jobs)  # the broker may be shared
    claims = {
        "other_tenant": (real.aggregate_id, {"tenant_id": "t-2", "visitor_id": "v1"}),
        "other_visitor": (real.aggregate_id, {"tenant_id": "t-1", "visitor_id": "v9"}),
        "no_row": ("interaction-never-recorded", {"tenant_id": "t-1", "visitor_id": "v1"}),
    }
    sent = {
        name: forge(
            bootstrap,
            "interaction-events",
            key,
            InteractionRecorded(kind="page_view", **fields),
        )
        for name, (key, fields) in claims.items()
    }
    rollup = TenantAnalyticsSyncRequested(tenant_id="t-nobody", day=utcnow().date())
    headers = {"x-job": "sync-tenant-analytics"}
    sent["no_tenant"] = forge(bootstrap, analytics.jobs_topic, "t-nobody", rollup, headers)
    with harness(postgres_db, bootstrap, analytics, jobs, events=registry) as h:
        h.start_worker()
        failed = _all_failed(postgres_db, analytics.name, len(sent))
        assert {name: failed[ce_id][1] for name, ce_id in sent.items()} == {
            "other_tenant": "record_mismatch",
            "other_visitor": "record_mismatch",
            "no_row": "not_verified",
            "no_tenant": "not_verified",
        }
        assert _rows(postgres_db, visitor_activity) == []
        h.start_relay()
        wait_for(lambda: _rows(postgres_db, visitor_activity) != [], what="the real one")
    [counted] = _rows(postgres_db, visitor_activity)
    with postgres_db.connect() as conn:
        occurred = conn.execute(select(interactions.c.occurred_at)).scalar_one()
    assert (counted.tenant_id, counted.visitor_id, counted.interactions) == ("t-1", "v1", 1)
    assert counted.last_seen_at == occurred
    assert _rows(postgres_db, tenant_daily_analytics) == []


def _rows(engine: Engine, table: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(table)).all())
