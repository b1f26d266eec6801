"""The write plan's edge cases, on every backend: same-row writes and very large commands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import IntegrityError

from domain import CommandBus
from domain.commands import Command, HandlerRegistry, UnitOfWorkPort
from domain.limits import RECIPIENTS_PER_EVENT
from domain.marketing import CreateCampaign
from domain.products import Product
from domain.schema import campaign_recipients, campaigns, payment_webhooks, products, tenants
from domain.write_plan import MAX_PARAMS, Insert, Lookup, WritePlan
from outbox import outbox_table
from tests.queries import count_rows, versions_of
from tests.scenario import onboard, order, product

pytestmark = pytest.mark.integration


class CreateAndSell(Command):
    product_id: str


def test_insert_then_update_of_one_row_in_one_command_keeps_the_update(engine: Engine) -> None:
    """Given one command that creates a product and adjusts its stock (two writes to one row),
    Then the state row shows the adjustment: on PostgreSQL the plan must not merge writes
    that sibling CTEs could not see."""
    registry = HandlerRegistry()

    @registry.register(CreateAndSell)
    def _handle(cmd: CreateAndSell, uow: UnitOfWorkPort) -> str:
        item = Product.create(
            cmd.product_id, tenant_id="t-1", name="N", sku="S", price_cents=100, stock=10
        )
        item.adjust_stock(-3, "launch sale")
        item.adjust_stock(-2, "launch sale")
        uow.add(item)
        return item.id

    onboard(CommandBus(engine, shards=4))
    CommandBus(engine, shards=4, command_handlers=registry).dispatch(CreateAndSell(product_id="p"))
    with engine.connect() as conn:
        row = conn.execute(select(products).where(products.c.id == "p")).one()
    assert (row.stock_quantity, row.version) == (5, 3)
    assert versions_of(engine, "p") == [1, 2, 3]


def test_a_multi_event_command_is_one_write_statement_on_postgresql(postgres_db: Engine) -> None:
    """Given an order over two products (3 events, 3 state writes, 3 outbox rows),
    Then PostgreSQL receives every write in a single statement."""
    bus = CommandBus(postgres_db, shards=4)
    onboard(bus)
    product(bus, "p-1")
    product(bus, "p-2")
    writes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "WITH")):
            writes.append(statement)

    event.listen(postgres_db, "before_cursor_execute", record)
    try:
        bus.dispatch(order({"p-1": 1, "p-2": 2}))
    finally:
        event.remove(postgres_db, "before_cursor_execute", record)
    assert len(writes) == 1
    assert count_rows(postgres_db, outbox_table) == 1 + 2 + 3  # tenant, products, order


def test_a_plan_larger_than_one_statement_is_chunked(engine: Engine) -> None:
    """Given more rows than one statement takes parameters for, Then every row is written
    (chunked inserts) in the caller's one transaction."""
    bus = CommandBus(engine, shards=4)
    onboard(bus)
    bus.dispatch(CreateCampaign(campaign_id="big", tenant_id="t-1", name="B", subject="Hi",
                                recipients=["a@example.com"]))  # fmt: skip
    plan = WritePlan()
    rows = MAX_PARAMS // 2 + 5_000
    for n in range(rows):
        plan.insert(campaign_recipients, {"campaign_id": "big", "email": f"r{n}@example.com"})
    with engine.begin() as conn:
        plan.execute(conn)
    assert count_rows(engine, campaign_recipients) == rows + 1


def test_a_large_campaign_keeps_its_recipients_in_rows_and_its_events_small(
    engine: Engine,
) -> None:
    """Given a campaign of several recipient events, Then every recipient is a row and no
    outbox row comes near a Kafka record's limit (100,000: tests/unit/test_domain_limits)."""
    recipients = [f"recipient-{n}@example.com" for n in range(5 * RECIPIENTS_PER_EVENT)]
    bus = CommandBus(engine, shards=4)
    onboard(bus)
    bus.dispatch(
        CreateCampaign(
            campaign_id="big", tenant_id="t-1", name="Big", subject="Hi", recipients=recipients
        )
    )
    with engine.connect() as conn:
        count = conn.execute(select(campaigns.c.recipients_count)).scalar_one()
        sizes = (
            conn.execute(
                select(func.length(outbox_table.c.payload)).where(
                    outbox_table.c.topic == "campaign-events"
                )
            )
            .scalars()
            .all()
        )
    assert count_rows(engine, campaign_recipients) == count == len(recipients)
    assert len(sizes) == 1 + len(recipients) // RECIPIENTS_PER_EVENT
    assert max(sizes) < 64 * 1024


def test_unknown_column_is_refused_before_any_sql(engine: Engine) -> None:
    plan = WritePlan()
    plan.insert(products, {"id": "x", "no_such_column": 1})
    with engine.begin() as conn, pytest.raises(KeyError, match="no_such_column"):
        plan.execute(conn)


def test_a_lookup_value_is_read_by_the_statement_itself(engine: Engine) -> None:
    """Rows with a Lookup and rows with a plain value in the same column are both written
    right (they are statements of different shapes), NULL where the lookup finds no row."""
    bus = CommandBus(engine, shards=4)
    onboard(bus)
    plan = WritePlan()
    for n, tenant in enumerate([Lookup(tenants, "name", "id", "t-1"), "plain",
                                Lookup(tenants, "name", "id", "t-nobody"), "plain-2"]):  # fmt: skip
        plan.insert(payment_webhooks, _webhook_row(f"w-{n}", tenant))
    with engine.begin() as conn:
        plan.execute(conn)
    with engine.connect() as conn:
        rows = conn.execute(select(payment_webhooks.c.id, payment_webhooks.c.tenant_id))
        stored = {row.id: row.tenant_id for row in rows}
    assert stored == {"w-0": "Acme", "w-1": "plain", "w-2": None, "w-3": "plain-2"}


def test_a_lookup_of_a_column_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="no column 'nope'"):
        Lookup(tenants, "nope", "id", "t-1")


def test_writes_of_several_statements_in_autocommit_are_one_transaction(
    server_db: Engine,
) -> None:
    """On an autocommit connection a plan of several statements (here: more parameters than
    one statement takes) runs in a transaction of its own: a failing later statement (a
    recipient twice) leaves nothing of the earlier ones; a plan that succeeds is all there."""
    bus = CommandBus(server_db, shards=4)
    onboard(bus)
    bus.dispatch(CreateCampaign(campaign_id="big", tenant_id="t-1", name="B", subject="Hi",
                                recipients=["a@example.com"]))  # fmt: skip

    def plan_for(webhook: str, *, twice: bool) -> WritePlan:
        plan = WritePlan()
        plan.insert(payment_webhooks, _webhook_row(webhook, None))
        for n in [*range(MAX_PARAMS // 2 + 10), *([0] if twice else [])]:
            plan.insert(campaign_recipients, {"campaign_id": "big", "email": f"r{n}@x.test"})
        return plan

    with server_db.connect() as conn:
        autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(IntegrityError):
            plan_for("w-lost", twice=True).execute(autocommit)
        plan_for("w-kept", twice=False).execute(autocommit)  # the connection is usable again
    with server_db.connect() as conn:
        kept = set(conn.execute(select(payment_webhooks.c.id)).scalars())
    assert kept == {"w-kept"}
    assert count_rows(server_db, campaign_recipients) == 1 + MAX_PARAMS // 2 + 10


def _webhook_row(row_id: str, tenant: object) -> dict[str, Any]:
    return {
        "id": row_id, "gateway": "standard", "webhook_id": row_id, "scheme": "standard-webhooks",
        "kind": "other", "payment_id": None, "order_id": None, "body": "{}", "headers": "{}",
        "received_at": datetime(2026, 12, 7, tzinfo=UTC), "tenant_id": tenant,
    }  # fmt: skip


class FlushTwice(Command):
    product_id: str


def test_the_callers_first_rows_are_written_once_with_or_without_events(engine: Engine) -> None:
    """run_in's `first` rows go with the command's write: also when the command records no
    event, and never twice when a handler flushes on its own."""
    registry = HandlerRegistry()

    @registry.register(FlushTwice)
    def _handle(cmd: FlushTwice, uow: UnitOfWorkPort) -> str:
        uow.flush()  # type: ignore[attr-defined]  # a handler that flushes before returning
        return cmd.product_id

    bus = CommandBus(engine, shards=4, command_handlers=registry)
    with engine.begin() as conn:
        first = [Insert(payment_webhooks, _webhook_row("w-first", None))]
        result = bus.run_in(conn, FlushTwice(product_id="p"), first=first)
    assert result.events == []
    assert count_rows(engine, payment_webhooks) == 1
