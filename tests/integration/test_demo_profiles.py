"""The demo's profile step on its own: Acme onboards, lists products, and the step shows an
enriched profile and a delayed dispatch that waited for its time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select

from domain import CommandBus
from domain.products import CreateProduct
from domain.schema import tenants
from domain.tenancy import OnboardTenant
from infra.broker import EmbeddedBroker
from infra.db import make_engine
from infra.migrate import upgrade
from outbox.schema import outbox_table
from pipeline.demo.consumers import SHARDS, demo_settings
from pipeline.demo.profiles import DEMO_TENANT, run_profiles_demo

pytestmark = pytest.mark.integration


def test_the_profile_demo_enriches_acme_and_shows_the_delayed_row(
    private_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/demo.db")
    upgrade(engine)
    bus = CommandBus(engine, shards=SHARDS)
    bus.dispatch(OnboardTenant(tenant_id=DEMO_TENANT, name="Acme Anvils", contact_email="o@a.io"))
    for pid, name in (("anvil", "Anvil"), ("rocket", "Rocket skates")):
        bus.dispatch(
            CreateProduct(
                product_id=pid,
                tenant_id=DEMO_TENANT,
                name=name,
                sku=pid.upper(),
                price_cents=100,
                stock_quantity=1,
            )
        )
    console = Console(record=True, width=200)
    settings = demo_settings(private_broker.bootstrap_servers, tmp_path)
    run_profiles_demo(engine, settings, console)
    with engine.connect() as conn:
        profile = json.loads(
            conn.execute(select(tenants.c.profile).where(tenants.c.id == DEMO_TENANT)).scalar_one()
        )
        o = outbox_table.c
        [delayed] = conn.execute(
            select(o.available_at, o.published_at).where(o.available_at > o.created_at)
        ).all()
    assert profile["description"].startswith("Acme Anvils offers 2 products, featuring ")
    assert "anvil" in profile["tags"] and "rocket skates" in profile["tags"]
    assert delayed.published_at >= delayed.available_at
    shown = console.export_text()
    assert "Acme Anvils offers 2 products" in shown
    assert "published no earlier than available_at" in shown
    engine.dispose()
