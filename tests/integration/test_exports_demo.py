"""The demo's exports step end to end: commands -> outbox -> relay -> the embedded broker ->
the exports group's worker -> files -> `outbox serve` -> downloads by signed URL."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from sqlalchemy import Engine, select

from domain import CommandBus
from domain.ordering import OrderLine, PayOrder, PlaceOrder
from domain.products import CreateProduct
from domain.schema import sales_exports
from infra.broker import EmbeddedBroker
from pipeline.demo.consumers import demo_settings
from pipeline.demo.exports import run_exports_demo
from tests.scenario import ensure_tenant


def test_the_demo_exports_and_reports_through_kafka_and_downloads_them(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    bus = CommandBus(postgres_db, shards=8)
    ensure_tenant(bus, "acme")
    bus.dispatch(
        CreateProduct(
            product_id="anvil", tenant_id="acme", name="=Anvil", sku="ANV",
            price_cents=4900, stock_quantity=100,
        )
    )  # fmt: skip
    for n in range(3):
        oid = bus.dispatch(
            PlaceOrder(
                tenant_id="acme",
                customer_email=f"wile{n}@example.com",
                lines=[OrderLine(product_id="anvil", quantity=n + 1)],
            )
        ).aggregate_id
        if n:
            bus.dispatch(PayOrder(order_id=oid, payment_ref=f"p{n}", amount_cents=(n + 1) * 4900))
    console = Console(record=True, width=160)
    settings = demo_settings(kafka.bootstrap_servers, tmp_path / "storage")
    settings = settings.model_copy(update={"outbox_shards": 8})
    run_exports_demo(postgres_db, settings, console, exports_dir=tmp_path / "exports")
    text = console.export_text()
    with postgres_db.connect() as conn:
        states = conn.execute(select(sales_exports.c.kind, sales_exports.c.status)).all()
    assert sorted(states) == [("csv", "ready"), ("pdf", "ready")]
    assert "GET the CSV's signed URL: 200" in text and "the PDF's: 200" in text
    assert "another tenant: 403" in text
    assert "'=Anvil" in text and "w***@example.com" in text and "wile1@" not in text
    assert "Orders: 3" in text and "Revenue: 245.00" in text and "Paid orders: 2" in text
