"""The write plan's edge cases, on every backend: same-row writes and very large commands."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from domain import CommandBus
from domain.commands import Command, HandlerRegistry, UnitOfWorkPort
from domain.limits import RECIPIENTS_PER_EVENT
from domain.marketing import CreateCampaign
from domain.products import Product
from domain.schema import campaign_recipients, campaigns, products
from domain.write_plan import MAX_PARAMS, WritePlan
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
