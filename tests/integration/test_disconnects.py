"""A database connection that dies between commands costs a retry, not a failed command."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select, text

from domain import CommandBus
from domain.catalog import CreateProduct
from domain.schema import domain_events
from pipeline.db import make_engine
from tests.scenario import onboard

pytestmark = pytest.mark.integration


def _kill_server_side(admin: Engine, victim: Engine) -> None:
    """Terminate the victim's pooled connection from another session, as a failover would."""
    with victim.connect() as conn:
        if victim.dialect.name == "postgresql":
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        else:
            pid = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        conn.rollback()
    with admin.connect() as conn:
        if admin.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        else:
            conn.execute(text(f"KILL {int(pid)}"))


def test_a_dead_pooled_connection_is_replaced_and_the_command_runs(server_db: Engine) -> None:
    """Given the pool holds a connection the server has killed, When a command runs,
    Then it is re-run on a fresh connection and applied exactly once."""
    url = server_db.url.render_as_string(hide_password=False)
    victim = make_engine(url, pool_size=1, max_overflow=0)
    bus = CommandBus(victim, shards=8)
    onboard(bus)
    _kill_server_side(server_db, victim)

    result = bus.dispatch(
        CreateProduct(product_id="p-1", tenant_id="t-1", name="A", sku="A", price_cents=1)
    )
    assert result.attempts == 2, "the first try met the dead connection"
    with server_db.connect() as conn:
        created = conn.execute(
            select(func.count())
            .select_from(domain_events)
            .where(domain_events.c.aggregate_id == "p-1")
        ).scalar_one()
    assert created == 1
    victim.dispose()
