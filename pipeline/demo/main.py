"""The demo's day: the scripted business day on a fresh database, then what it wrote."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, Select, func, select
from sqlalchemy.engine import make_url

from domain import CommandBus, DomainError
from domain.analytics import RecordInteraction
from domain.appointments import BookAppointment
from domain.marketing import CreateCampaign, LaunchCampaign
from domain.ordering import CancelOrder, OrderLine, PayOrder, PlaceOrder
from domain.products import CreateProduct, UploadProductImage
from domain.schema import appointments, campaigns, domain_events, orders, products, tenants
from domain.tenancy import ApproveTenant, EnhanceTenantProfile, OnboardTenant
from infra.broker import EmbeddedBroker
from infra.db import make_engine
from infra.migrate import upgrade
from outbox.schema import outbox_table
from outbox.types import utcnow
from pipeline.demo.campaigns import run_campaign_demo
from pipeline.demo.consumers import SHARDS, demo_settings, run_consumers, write_demo_images
from pipeline.demo.exports import run_exports_demo
from pipeline.demo.profiles import run_profiles_demo
from pipeline.demo.scheduler import run_scheduled_jobs
from pipeline.demo.web import run_web_demo
from pipeline.demo.webhooks import run_webhooks_demo
from pipeline.kafka_admin import read_topics
from pipeline.wiring import routed_topics
from relay import KafkaPublisher, Relay, RelayConfig, ensure_topics

__all__ = ["run_demo"]


def _fresh_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)
    engine = make_engine(database_url)
    upgrade(engine)
    return engine


def _scenario(bus: CommandBus, console: Console) -> None:
    step = console.print
    step("[bold]1.[/bold] Tenant Acme onboards, is approved and enhances its profile")
    bus.dispatch(
        OnboardTenant(tenant_id="acme", name="Acme Anvils", contact_email="ops@acme.example")
    )
    bus.dispatch(ApproveTenant(tenant_id="acme"))
    bus.dispatch(
        EnhanceTenantProfile(tenant_id="acme", profile={"website": "https://acme.example"})
    )

    step("[bold]2.[/bold] Two products are created and their images uploaded")
    bus.dispatch(
        CreateProduct(
            product_id="anvil",
            tenant_id="acme",
            name="Anvil",
            sku="ANV-1",
            price_cents=4900,
            stock_quantity=5,
        )
    )
    bus.dispatch(
        CreateProduct(
            product_id="rocket",
            tenant_id="acme",
            name="Rocket skates",
            sku="RKT-2",
            price_cents=12900,
            stock_quantity=2,
        )
    )
    bus.dispatch(UploadProductImage(product_id="anvil", image_path="anvil.png"))
    # A damaged upload: its job fails at once with a clear reason (see failed jobs below).
    bus.dispatch(UploadProductImage(product_id="rocket", image_path="rocket.jpg"))

    step("[bold]3.[/bold] Orders reserve stock; one is paid, one cancelled (stock restored)")
    bus.dispatch(
        PlaceOrder(
            order_id="ord-1",
            tenant_id="acme",
            customer_email="wile@example.com",
            lines=[
                OrderLine(product_id="anvil", quantity=2),
                OrderLine(product_id="rocket", quantity=1),
            ],
        )
    )
    bus.dispatch(PayOrder(order_id="ord-1", payment_ref="pay-001", amount_cents=2 * 4900 + 12900))
    bus.dispatch(
        PlaceOrder(
            order_id="ord-2",
            tenant_id="acme",
            customer_email="road@example.com",
            lines=[OrderLine(product_id="anvil", quantity=1)],
        )
    )
    bus.dispatch(CancelOrder(order_id="ord-2", reason="customer changed their mind"))
    try:
        bus.dispatch(
            PlaceOrder(
                order_id="ord-3",
                tenant_id="acme",
                customer_email="wile@example.com",
                lines=[OrderLine(product_id="rocket", quantity=5)],
            )
        )
    except DomainError as exc:
        step(f"   refused, nothing written: [yellow]{exc}[/yellow]")

    step(
        "[bold]4.[/bold] An appointment is booked for tomorrow; a campaign is created and launched"
    )
    bus.dispatch(
        BookAppointment(
            appointment_id="appt-1",
            tenant_id="acme",
            customer_email="wile@example.com",
            service="Anvil fitting",
            starts_at=utcnow() + timedelta(hours=23, minutes=30),
        )
    )
    bus.dispatch(
        CreateCampaign(
            campaign_id="spring",
            tenant_id="acme",
            name="Spring sale",
            subject="Anvils, 20% off",
            recipients=["wile@example.com", "road@example.com"],
        )
    )
    bus.dispatch(LaunchCampaign(campaign_id="spring"))
    for n in range(3):
        bus.dispatch(
            RecordInteraction(
                tenant_id="acme", visitor_id=f"visitor-{n}", kind="product_view", product_id="anvil"
            )
        )


def _table(title: str, rows: Sequence[Any], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


_o = outbox_table.c
# What the summary shows: (title, query). Column headers are the selected column names.
_VIEWS: list[tuple[str, Select[Any]]] = [
    ("tenants", select(tenants.c.id, tenants.c.status, tenants.c.plan, tenants.c.version)),
    (
        "products",
        select(
            products.c.id, products.c.stock_quantity, products.c.image_path, products.c.version
        ).order_by(products.c.id),
    ),
    (
        "orders",
        select(orders.c.id, orders.c.status, orders.c.total_cents, orders.c.cancel_reason).order_by(
            orders.c.id
        ),
    ),
    (
        "appointments",
        select(appointments.c.id, appointments.c.starts_at, appointments.c.reminder_sent_at),
    ),
    ("campaigns", select(campaigns.c.id, campaigns.c.status, campaigns.c.recipients_count)),
    (
        "outbox: rows waiting for the relay",
        select(_o.id, _o.topic, _o.key, _o.shard, _o.type, _o.status).order_by(_o.id),
    ),
]


def _summary(engine: Engine, console: Console) -> None:
    with engine.connect() as conn:
        for title, query in _VIEWS:
            result = conn.execute(query)
            console.print(_table(title, result.all(), list(result.keys())))
        events = conn.execute(select(func.count()).select_from(domain_events)).scalar_one()
        pending = conn.execute(
            select(func.count()).select_from(outbox_table).where(_o.status == "pending")
        ).scalar_one()
    console.print(
        f"[bold]{events}[/bold] events stored, [bold]{pending}[/bold] outbox rows pending: "
        "each committed in the same transaction as its state change."
    )


def _relay(engine: Engine, bootstrap: str, console: Console) -> None:
    """Run the relay once against the embedded broker, read the topics back."""
    console.rule("the relay: outbox -> Kafka")
    console.print(f"embedded broker (Tansu, memory only) on [bold]{bootstrap}[/bold]")
    topics = routed_topics()
    ensure_topics(bootstrap, topics)
    console.print(f"created {len(topics)} topics: " + ", ".join(sorted(topics)))
    config = RelayConfig(shards=SHARDS, topics=tuple(topics))
    relay = Relay(engine, lambda: KafkaPublisher(bootstrap, client_id="demo-relay"), config)
    stats = relay.run(once=True)
    console.print(
        f"`outbox relay --once` published [bold]{stats.published}[/bold] rows "
        f"in {stats.batches} batch(es), {stats.dead} dead"
    )
    records = _read_back(bootstrap, list(topics), expected=stats.published)
    with engine.connect() as conn:
        rows = conn.execute(
            select(_o.id, _o.topic, _o.key, _o.type, _o.kafka_partition, _o.kafka_offset)
            .where(_o.status == "published")
            .order_by(_o.id)
        ).all()
    table = Table(title="published: outbox row -> Kafka record (read back by a consumer)")
    for column in ("outbox id", "topic", "key", "type", "partition", "offset", "read back"):
        table.add_column(column)
    matched = 0
    for row in rows:
        record = records.get(str(row.id))
        same = record == (row.topic, row.kafka_partition, row.kafka_offset)
        matched += same
        table.add_row(
            str(row.id),
            row.topic,
            row.key,
            row.type,
            str(row.kafka_partition),
            str(row.kafka_offset),
            "[green]yes" if same else "[red]no",
        )
    console.print(table)
    console.print(
        f"[bold]{matched}/{len(rows)}[/bold] records read back at the partition and offset the "
        "outbox recorded; each aggregate's events share a key, hence a partition, in order."
    )


def _read_back(bootstrap: str, topics: list[str], expected: int) -> dict[str, tuple[str, int, int]]:
    """outbox_id header -> (topic, partition, offset) of every record on the topics."""
    return {
        dict(r.headers)["outbox_id"].decode(): (r.topic, r.partition, r.offset)
        for r in read_topics(bootstrap, topics, expected, timeout_s=15)
    }


def run_demo(database_url: str, console: Console, storage_dir: Path = Path("var/storage")) -> None:
    console.rule("outbox-pipeline demo: the write path")
    console.print(f"database: {make_url(database_url).render_as_string()} (recreated and migrated)")
    engine = _fresh_engine(database_url)
    write_demo_images(storage_dir)
    _scenario(CommandBus(engine, shards=SHARDS), console)
    _summary(engine, console)
    with EmbeddedBroker() as broker:
        _relay(engine, broker.bootstrap_servers, console)
        settings = demo_settings(broker.bootstrap_servers, storage_dir)
        run_consumers(engine, settings, console)
        run_scheduled_jobs(engine, settings, console)
        run_web_demo(engine, settings, console)
        run_campaign_demo(engine, settings, console)
        run_exports_demo(engine, settings, console)
        run_profiles_demo(engine, settings, console)
        run_webhooks_demo(engine, settings, console)
        # While the broker still runs, so that the consumer groups and their lag show.
        _print_status(engine, broker.bootstrap_servers, console)
    engine.dispose()


def _print_status(engine: Engine, bootstrap: str | None, console: Console) -> None:
    """The demo ends with what an operator sees first: `outbox status`."""
    from pipeline.cli.status import status_data, status_screen

    console.rule("`outbox status`")
    console.print(status_screen(status_data(engine, lease_ttl_s=10.0, bootstrap=bootstrap)))
