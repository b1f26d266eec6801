"""Ids and keys compare exactly on every backend: MariaDB's default collation folds case and
accents (and pads trailing spaces); migration 0006 gives those columns a binary NO PAD one."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select, text

import domain.schema
import outbox.schema
from domain import CommandBus
from domain.products import CreateProduct
from domain.schema import products, tenants
from domain.tenancy import OnboardTenant
from outbox import outbox_table
from outbox.coroner import key_story
from outbox.parking import park
from outbox.types import ExactString, utcnow
from relay import store
from tests.scenario import onboard

pytestmark = pytest.mark.integration


def _product(bus: CommandBus, product_id: str) -> None:
    bus.dispatch(
        CreateProduct(product_id=product_id, tenant_id="t-1", name="Anvil", sku=product_id,
                      price_cents=100, stock_quantity=1)
    )  # fmt: skip


def test_ids_that_differ_in_case_or_accent_are_different_ids(engine: Engine) -> None:
    """Given case-anvil and café, When CASE-ANVIL and cafe are created, Then both exist."""
    bus = CommandBus(engine, shards=4)
    onboard(bus)
    _product(bus, "case-anvil")
    _product(bus, "CASE-ANVIL")
    for tenant in ("café", "cafe"):
        bus.dispatch(OnboardTenant(tenant_id=tenant, name=tenant, contact_email="a@example.com"))
    with engine.connect() as conn:
        found = set(conn.execute(select(products.c.id)).scalars())
        assert found == {"case-anvil", "CASE-ANVIL"}
        assert set(conn.execute(select(tenants.c.id)).scalars()) == {"t-1", "café", "cafe"}
        # A lookup by one spelling finds only that one.
        assert conn.execute(select(products.c.id).where(products.c.id == "CASE-anvil")).all() == []
        assert conn.execute(select(tenants.c.id).where(tenants.c.id == "cafe ")).all() == []


def test_a_key_story_and_the_parked_keys_are_exact(engine: Engine) -> None:
    """Given rows of key `anvil`, Then `ANVIL` and `anvil   ` are other keys: the coroner finds
    nothing for them, and parking `ANVIL` does not hold `anvil` back in the relay's claim."""
    bus = CommandBus(engine, shards=1)
    onboard(bus)
    _product(bus, "anvil")
    now = utcnow()
    with engine.begin() as conn:
        for other in ("ANVIL", "anvil   "):
            story = key_story(conn, other, now, lease_ttl_s=10)
            assert not any(story.by_status.values()), other
        assert key_story(conn, "anvil", now, lease_ttl_s=10).by_status["pending"] == 1
        park(conn, "ANVIL", actor="test", reason=None, now=now)
    with engine.connect() as conn:
        parked = store.parked_keys(conn)
        assert parked == ["ANVIL"]
        claimed = store.claim(conn, {0: 100}, parked)
    assert "anvil" in {row.key for row in claimed}


def test_every_exact_column_has_a_binary_no_pad_collation_on_mysql(engine: Engine) -> None:
    """Alembic's comparison does not look at collations: this does, column by column."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("collations are a MySQL/MariaDB matter")
    expected = {
        (table.name, column.name)
        for metadata in (domain.schema.metadata, outbox.schema.metadata)
        for table in metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, ExactString)
    }
    assert ("outbox", "key") in expected and ("parked_keys", "key") in expected
    with engine.connect() as conn:
        collations = {
            (t, c): collation
            for t, c, collation in conn.execute(
                text(
                    "SELECT table_name, column_name, collation_name FROM information_schema.columns"
                    " WHERE table_schema = DATABASE()"
                )
            )
        }
    wrong = {col: collations.get(col) for col in expected if collations.get(col) != (
        "utf8mb4_nopad_bin" if engine.dialect.is_mariadb else "utf8mb4_0900_bin")}  # fmt: skip
    assert wrong == {}
    assert outbox_table.c.key.type.length == 255
