"""generate-pdf-report: orders placed, paid, cancelled and refunded through the real commands;
the PDF, read back with pypdf, shows the totals the database holds."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

from pypdf import PdfReader
from sqlalchemy import Engine, func, select, update

from domain import CommandBus
from domain.ordering import CancelOrder, OrderLine, PayOrder, PlaceOrder
from domain.products import CreateProduct
from domain.reporting import ExportStatus, RequestSalesReport
from domain.schema import orders
from domain.schema import sales_exports as e
from jobs.reports import money
from tests.export_helpers import export_row, job_config, run_job
from tests.scenario import ensure_tenant

JOB = "generate-pdf-report"


def _shop(bus: CommandBus) -> None:
    """Twelve orders of three products (one with a name Latin-1 cannot show): 5 paid, 3
    cancelled, the rest pending."""
    ensure_tenant(bus, "t-1")
    for pid, name, price in (
        ("anvil", "Anvil", 4900),
        ("rocket", "=Rocket skates", 12900),
        ("pan", "Pfanne \u4e2d\u6587", 1999),
    ):
        bus.dispatch(
            CreateProduct(
                product_id=pid,
                tenant_id="t-1",
                name=name,
                sku=pid.upper(),
                price_cents=price,
                stock_quantity=1000,
            )
        )
    plan = ["paid"] * 5 + ["cancelled"] * 3 + ["pending"] * 4
    for n, fate in enumerate(plan):
        lines = [OrderLine(product_id="anvil", quantity=n % 3 + 1)]
        if n % 2:
            lines.append(OrderLine(product_id="rocket", quantity=1))
        if n % 4 == 0:
            lines.append(OrderLine(product_id="pan", quantity=5))
        oid = bus.dispatch(
            PlaceOrder(
                order_id=f"o-{n}", tenant_id="t-1", customer_email=f"c{n}@example.com", lines=lines
            )
        ).aggregate_id
        total = sum(
            q * p
            for q, p in [
                (line.quantity, {"anvil": 4900, "rocket": 12900, "pan": 1999}[line.product_id])
                for line in lines
            ]
        )
        if fate == "paid":
            bus.dispatch(PayOrder(order_id=oid, payment_ref=f"pay-{n}", amount_cents=total))
        if fate == "cancelled":
            bus.dispatch(CancelOrder(order_id=oid))


def _text(path: Path) -> str:
    reader = PdfReader(BytesIO(path.read_bytes()))
    assert len(reader.pages) == 1
    return reader.pages[0].extract_text()


def test_the_pdf_report_shows_the_database_totals(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    _shop(bus)
    today = datetime.now(UTC).date()
    result = bus.dispatch(
        RequestSalesReport(tenant_id="t-1", period_from=today - timedelta(days=1), period_to=today)
    )
    run_job(engine, bus, JOB, result.events[0].event, result.aggregate_id, job_config(tmp_path))
    row = export_row(engine, result.aggregate_id)
    assert row.status == ExportStatus.READY, row.error
    assert row.kind == "pdf" and row.path.endswith(".pdf")
    text = _text(tmp_path / row.path)
    # The database's own figures, asked here independently of the job's queries.
    with engine.connect() as conn:
        count, paid, refunded = conn.execute(
            select(func.count(), func.sum(orders.c.paid_cents), func.sum(orders.c.refunded_cents))
        ).one()
        by_status = dict(
            conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status)).all()
        )
    assert count == 12 and by_status == {"PAID": 5, "CANCELLED": 3, "PENDING": 4}
    assert f"Orders: {count}" in text
    assert f"Revenue: {money(int(paid) - int(refunded))}" in text
    assert f"Paid orders: {by_status['PAID']}" in text
    assert f"Cancelled orders: {by_status['CANCELLED']}" in text
    for status, n in by_status.items():
        assert f"{status}: {n} orders" in text
    # Anvils are the most sold product; the name Latin-1 cannot show prints with "?".
    assert "1. Anvil (ANVIL)" in text
    assert "Pfanne ??" in text
    assert row.row_count == count


def test_a_report_for_a_period_without_orders_says_so(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    ensure_tenant(bus, "t-1")
    day = datetime.now(UTC).date() - timedelta(days=100)
    result = bus.dispatch(RequestSalesReport(tenant_id="t-1", period_from=day, period_to=day))
    run_job(engine, bus, JOB, result.events[0].event, result.aggregate_id, job_config(tmp_path))
    row = export_row(engine, result.aggregate_id)
    text = _text(tmp_path / row.path)
    assert "Orders: 0" in text and "Revenue: 0.00" in text
    assert "No products sold in this period." in text


def test_a_retried_report_writes_the_same_bytes(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    _shop(bus)
    today = datetime.now(UTC).date()
    result = bus.dispatch(RequestSalesReport(tenant_id="t-1", period_from=today, period_to=today))
    config = job_config(tmp_path)
    run_job(engine, bus, JOB, result.events[0].event, result.aggregate_id, config)
    first = export_row(engine, result.aggregate_id)
    (tmp_path / first.path).unlink()
    with engine.begin() as conn:  # as if the ready mark had not stuck in the projection
        conn.execute(update(e).where(e.c.id == first.id).values(status="requested"))
    run_job(engine, bus, JOB, result.events[0].event, result.aggregate_id, config)
    # Written again, the same bytes (creation date = request time); recorded once only.
    rewritten = (tmp_path / first.path).read_bytes()
    assert hashlib.sha256(rewritten).hexdigest() == first.sha256
