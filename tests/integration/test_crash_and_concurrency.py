"""Process death around the commit, and real concurrent writers."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from domain import CommandBus, ConcurrencyError, InsufficientStock, NotFound
from domain.commands import Command, HandlerRegistry, UnitOfWorkPort
from domain.products import AdjustStock, Product
from domain.schema import domain_events, products, tenants
from outbox import outbox_table
from tests.queries import count_rows, versions_of
from tests.scenario import onboard, order, product

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _counts(engine: Engine, tenant_id: str) -> tuple[int, int, int]:
    return (
        count_rows(engine, tenants, tenants.c.id == tenant_id),
        count_rows(engine, domain_events, domain_events.c.aggregate_id == tenant_id),
        count_rows(engine, outbox_table, outbox_table.c.key == tenant_id),
    )


@pytest.mark.parametrize(
    ("when", "expected"), [("after-commit", (1, 1, 1)), ("before-commit", (0, 0, 0))]
)
def test_sigkill_around_commit_keeps_all_or_nothing(
    engine: Engine, when: str, expected: tuple[int, int, int]
) -> None:
    """Given a child SIGKILLed right after (before) its commit, Then all three rows (none) exist."""
    url = engine.url.render_as_string(hide_password=False)
    child = subprocess.run(
        [sys.executable, "-m", "tests.crash_child", url, when, "t-crash"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert _counts(engine, "t-crash") == expected


class Race(Command):
    product_id: str


def test_a_lost_race_is_retried_then_reported_clearly(server_db: Engine) -> None:
    """Given a competing writer commits between our load and our flush, Then the bus retries;
    with no retries left it raises ConcurrencyError and writes nothing."""
    plain = CommandBus(server_db, shards=8)
    onboard(plain)
    product(plain, "p-1", stock=10)
    racing = HandlerRegistry()
    calls = Counter[str]()

    @racing.register(Race)
    def _race(cmd: Race, uow: UnitOfWorkPort) -> str:
        item = uow.get(Product, cmd.product_id)
        calls["attempt"] += 1
        if calls["attempt"] <= calls["races"]:
            plain.dispatch(AdjustStock(product_id=cmd.product_id, delta=-1))  # wins the race
        item.adjust_stock(-2, "race")
        return item.id

    calls["races"] = 1
    result = CommandBus(server_db, shards=8, command_handlers=racing).dispatch(
        Race(product_id="p-1")
    )
    assert result.attempts == 2
    calls.clear()
    calls["races"] = 99
    with pytest.raises(
        ConcurrencyError, match=r"lost the race to concurrent writers 2 times; nothing was written"
    ):
        CommandBus(server_db, shards=8, command_handlers=racing, max_attempts=2).dispatch(
            Race(product_id="p-1")
        )
    versions = versions_of(server_db, "p-1")
    with server_db.connect() as conn:
        stock = conn.execute(select(products.c.stock_quantity)).scalar_one()
    assert versions == list(range(1, len(versions) + 1))
    # 10 - 1 (winner) - 2 (our retried command) - 2 (two more winners in the failed run)
    assert stock == 5 and len(versions) == 5


def test_eight_concurrent_writers_lose_no_update_and_never_oversell(server_db: Engine) -> None:
    """Given 8 threads ordering one product with stock 40, Then exactly 40 units are sold,
    versions are contiguous and every accepted command has one outbox row per event."""
    bus = CommandBus(server_db, shards=8, max_attempts=50)
    onboard(bus)
    product(bus, "hot", stock=40)
    accepted: list[Any] = []
    refused: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(8):
            try:
                result = bus.dispatch(order({"hot": 1}, order_id=f"o-{n}-{i}"))
            except InsufficientStock as exc:
                with lock:
                    refused.append(str(exc))
            except (ConcurrencyError, NotFound) as exc:  # pragma: no cover - reported below
                with lock:
                    failures.append(exc)
            else:
                with lock:
                    accepted.append(result)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures
    assert len(accepted) == 40 and len(refused) == 64 - 40
    assert any(r.attempts > 1 for r in accepted), "the writers really raced"
    with server_db.connect() as conn:
        stock = conn.execute(
            select(products.c.stock_quantity).where(products.c.id == "hot")
        ).scalar_one()
        outbox_ids = Counter(conn.execute(select(outbox_table.c.event_id)).scalars().all())
    assert stock == 0
    assert versions_of(server_db, "hot") == list(range(1, 42))  # created + 40 reservations
    for result in accepted:
        assert len(result.events) == 2  # stock reserved + order placed
        assert all(outbox_ids[rec.event_id] == 1 for rec in result.events)
