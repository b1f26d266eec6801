"""The write plan's edge cases, on every backend: same-row writes and very large commands."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from domain import CommandBus
from domain.catalog import Product
from domain.commands import Command, HandlerRegistry, UnitOfWorkPort
from domain.marketing import CreateCampaign
from domain.schema import campaign_recipients, campaigns, domain_events, products
from domain.write_plan import MAX_PARAMS, WritePlan
from outbox import outbox_table
from tests.scenario import onboard

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
        events = conn.execute(
            select(func.count())
            .select_from(domain_events)
            .where(domain_events.c.aggregate_id == "p")
        ).scalar_one()
    assert (row.stock_quantity, row.version, events) == (5, 3, 3)


def test_a_command_larger_than_one_statement_is_chunked(engine: Engine) -> None:
    """Given a campaign whose recipient rows need more parameters than one statement takes,
    Then every row is written (chunked inserts) and the command is still one transaction."""
    recipients = [f"r{n}@example.com" for n in range(MAX_PARAMS // 2 + 5_000)]
    bus = CommandBus(engine, shards=4)
    bus.dispatch(
        CreateCampaign(
            campaign_id="big", tenant_id="t-1", name="Big", subject="Hi", recipients=recipients
        )
    )
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(campaign_recipients)).scalar_one()
        count = conn.execute(select(campaigns.c.recipients_count)).scalar_one()
        outbox_rows = conn.execute(select(func.count()).select_from(outbox_table)).scalar_one()
    assert stored == count == len(recipients)
    assert outbox_rows == 1


def test_unknown_column_is_refused_before_any_sql(engine: Engine) -> None:
    plan = WritePlan()
    plan.insert(products, {"id": "x", "no_such_column": 1})
    with engine.begin() as conn, pytest.raises(KeyError, match="no_such_column"):
        plan.execute(conn)
