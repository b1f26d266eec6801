"""A database connection that dies between commands costs a retry, not a failed command."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, event, text

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


def _on_write(victim: Engine, act: Any, when: str = "before_cursor_execute") -> None:
    """Call `act(conn)` at the unit of work's one write statement (WITH ...) of `victim`."""

    def listener(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("WITH") and not getattr(listener, "done", False):
            listener.done = True  # type: ignore[attr-defined]
            act(conn)

    event.listen(victim, when, listener)


def test_a_connection_lost_before_the_one_statement_write_is_run_again(
    postgres_db: Engine,
) -> None:
    """On PostgreSQL a command is one statement in autocommit. Given its connection dies as
    the statement is sent, Then the bus asks the database whether it was stored (it was
    not), runs it again, and it is applied once."""
    url = postgres_db.url.render_as_string(hide_password=False)
    victim = make_engine(url, pool_size=1, max_overflow=0)
    bus = CommandBus(victim, shards=8)
    onboard(bus)
    _on_write(victim, lambda conn: _kill(postgres_db, _server_id(conn)))
    result = bus.dispatch(
        CreateProduct(product_id="p-1", tenant_id="t-1", name="A", sku="A", price_cents=1)
    )
    assert result.attempts == 2
    assert versions_of(postgres_db, "p-1") == [1]
    victim.dispose()


def test_a_connection_lost_after_the_one_statement_write_is_not_run_again(
    postgres_db: Engine,
) -> None:
    """Given the statement was stored and then the answer was lost, Then the bus finds its
    event row, reports the command done, and does not apply it twice."""
    url = postgres_db.url.render_as_string(hide_password=False)
    victim = make_engine(url, pool_size=1, max_overflow=0)
    bus = CommandBus(victim, shards=8)
    onboard(bus)

    def lose_the_answer(conn: Connection) -> None:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        _kill(postgres_db, int(driver.info.backend_pid))
        driver.close()  # what the driver sees when the answer never comes
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    _on_write(victim, lose_the_answer, when="after_cursor_execute")
    result = bus.dispatch(
        CreateProduct(product_id="p-1", tenant_id="t-1", name="A", sku="A", price_cents=1)
    )
    assert result.attempts == 1
    assert [e.event.TYPE for e in result.events] == ["product.created"]
    assert versions_of(postgres_db, "p-1") == [1]
    victim.dispose()


def test_a_write_lost_in_flight_with_the_database_unreachable_is_an_unknown_outcome(
    postgres_db: Engine,
) -> None:
    """Given the answer to the one statement is lost and no new connection can be made to
    ask whether it was stored, Then the bus raises CommitOutcomeUnknown and runs nothing
    again (here the write was stored: running it again would apply it twice)."""
    url = postgres_db.url.render_as_string(hide_password=False)
    victim = make_engine(url, pool_size=1, max_overflow=0)
    bus = CommandBus(victim, shards=8)
    onboard(bus)

    def refuse(*_args: Any) -> None:
        raise psycopg.OperationalError("connection refused")

    def lose_the_answer_and_the_database(conn: Connection) -> None:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        _kill(postgres_db, int(driver.info.backend_pid))
        driver.close()
        event.listen(victim, "do_connect", refuse)  # from now on: unreachable
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    _on_write(victim, lose_the_answer_and_the_database, when="after_cursor_execute")
    with pytest.raises(CommitOutcomeUnknown, match="cannot be asked whether it was applied"):
        bus.dispatch(
            CreateProduct(product_id="p-1", tenant_id="t-1", name="A", sku="A", price_cents=1)
        )
    assert versions_of(postgres_db, "p-1") == [1]
    victim.dispose()
