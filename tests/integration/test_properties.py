"""Property: whatever commands arrive, in whatever order, the invariants hold (SQLite)."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from domain import CommandBus, DomainError, rebuild_projections, registry
from domain.ordering import CancelOrder, PayOrder
from domain.products import AdjustStock, Product
from domain.schema import PROJECTION_TABLES, domain_events, orders, products
from domain.unit_of_work import CommandContext, UnitOfWork
from infra.db import make_engine
from infra.migrate import upgrade
from outbox import outbox_table
from outbox.types import utcnow
from tests.scenario import onboard, order, product

pytestmark = pytest.mark.integration

PRODUCTS = ["p-a", "p-b", "p-c"]
ORDERS = [f"o-{n}" for n in range(6)]

command = st.one_of(
    st.builds(
        lambda oid, lines: ("place", oid, lines),
        st.sampled_from(ORDERS),
        st.dictionaries(st.sampled_from(PRODUCTS), st.integers(1, 4), min_size=1, max_size=3),
    ),
    st.builds(lambda oid: ("cancel", oid), st.sampled_from(ORDERS)),
    st.builds(lambda oid: ("pay", oid), st.sampled_from(ORDERS)),
    st.builds(
        lambda pid, d: ("adjust", pid, d),
        st.sampled_from(PRODUCTS),
        st.integers(-5, 5).filter(bool),
    ),
)


def _run(bus: CommandBus, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "place":
        bus.dispatch(order(step[2], order_id=step[1]))
    elif kind == "cancel":
        bus.dispatch(CancelOrder(order_id=step[1]))
    elif kind == "pay":
        with bus.engine.connect() as conn:
            total = conn.execute(
                select(orders.c.total_cents).where(orders.c.id == step[1])
            ).scalar()
        bus.dispatch(PayOrder(order_id=step[1], payment_ref="r", amount_cents=total or 0))
    else:
        bus.dispatch(AdjustStock(product_id=step[1], delta=step[2]))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(command, min_size=1, max_size=25))
def test_random_commands_keep_every_invariant(tmp_path: Path, steps: list[tuple[Any, ...]]) -> None:
    path = tmp_path / f"prop-{uuid.uuid4()}.db"  # hypothesis reuses tmp_path across examples
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    bus = CommandBus(engine, shards=4)
    onboard(bus)
    for pid in PRODUCTS:
        product(bus, pid, stock=5)
    for step in steps:
        # Refused commands are part of the property: they must write nothing.
        with contextlib.suppress(DomainError):
            _run(bus, step)

    with engine.begin() as conn:
        events = conn.execute(select(func.count()).select_from(domain_events)).scalar_one()
        rows = conn.execute(select(func.count()).select_from(outbox_table)).scalar_one()
        assert rows == events
        uow = UnitOfWork(conn, registry, now=utcnow(), context=CommandContext(), shards=4)
        for pid in PRODUCTS:
            folded = uow.get(Product, pid)
            stored = conn.execute(select(products).where(products.c.id == pid)).one()
            assert folded.stock_quantity == stored.stock_quantity >= 0
            assert folded.version == stored.version
            versions = (
                conn.execute(
                    select(domain_events.c.version)
                    .where(domain_events.c.aggregate_id == pid)
                    .order_by(domain_events.c.version)
                )
                .scalars()
                .all()
            )
            assert versions == list(range(1, len(versions) + 1))
        # Conservation: stock = initial + manual adjustments - units held by live orders.
        held = dict.fromkeys(PRODUCTS, 0)
        for status, lines in conn.execute(select(orders.c.status, orders.c.lines)).all():
            if status != "CANCELLED":
                for line in json.loads(lines):
                    held[line["product_id"]] += line["quantity"]
        manual = dict.fromkeys(PRODUCTS, 0)
        for aggregate_id, payload in conn.execute(
            select(domain_events.c.aggregate_id, domain_events.c.payload).where(
                domain_events.c.type == "product.stock_adjusted"
            )
        ).all():
            data = json.loads(payload)
            if data["reason"] == "manual":
                manual[aggregate_id] += data["delta"]
        stock = dict(conn.execute(select(products.c.id, products.c.stock_quantity)).all())
        assert stock == {pid: 5 + manual[pid] - held[pid] for pid in PRODUCTS}
        live = {
            t.name: sorted(map(tuple, conn.execute(select(t)).all())) for t in PROJECTION_TABLES
        }
        rebuild_projections(conn, registry)
        rebuilt = {
            t.name: sorted(map(tuple, conn.execute(select(t)).all())) for t in PROJECTION_TABLES
        }
        assert rebuilt == live
    engine.dispose()
