"""A database connection that dies between commands costs a retry, not a failed command."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from domain import CommandBus, CommitOutcomeUnknown
from domain.products import CreateProduct
from infra.db import make_engine
from tests.queries import versions_of
from tests.scenario import onboard

pytestmark = pytest.mark.integration


def _server_id(conn: Connection) -> int:
    query = (
        "SELECT pg_backend_pid()" if conn.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
    )
    return int(conn.execute(text(query)).scalar_one())


def _kill(admin: Engine, server_id: int) -> None:
    """Terminate a session from another one, as a failover would, and wait until it is gone."""
    with admin.connect() as conn:
        if admin.dialect.name == "postgresql":
            # The timeout makes the call wait until the backend has really exited.
            conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": server_id})
            return
        conn.execute(text(f"KILL {server_id}"))
        for _ in range(50):
            alive = conn.execute(
                text("SELECT COUNT(*) FROM information_schema.processlist WHERE id = :id"),
                {"id": server_id},
            ).scalar_one()
            if not alive:
                return
            time.sleep(0.1)


def _kill_server_side(admin: Engine, victim: Engine) -> None:
    """Terminate the victim's pooled connection between two commands."""
    with victim.connect() as conn:
        server_id = _server_id(conn)
        conn.rollback()
    _kill(admin, server_id)


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
    assert versions_of(server_db, "p-1") == [1]
    victim.dispose()


def test_a_connection_lost_at_commit_is_reported_and_not_rerun(server_db: Engine) -> None:
    """Given the connection dies after the writes and before COMMIT completes, Then the bus
    raises CommitOutcomeUnknown and does not run the command again (it might double-apply)."""
    url = server_db.url.render_as_string(hide_password=False)
    victim = make_engine(url, pool_size=1, max_overflow=0)
    bus = CommandBus(victim, shards=8)
    onboard(bus)
    tries: list[int] = []

    def die_before_commit(conn: Connection, _records: Any) -> None:
        tries.append(1)
        _kill(server_db, _server_id(conn))

    bus.hooks.before_commit.append(die_before_commit)
    with pytest.raises(CommitOutcomeUnknown, match="may or may not have been applied"):
        bus.dispatch(
            CreateProduct(product_id="p-1", tenant_id="t-1", name="A", sku="A", price_cents=1)
        )
    assert tries == [1]
    # Here the session died before COMMIT reached the server, so nothing was applied.
    assert versions_of(server_db, "p-1") == []
    victim.dispose()
