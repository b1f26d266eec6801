"""Migration 0015 and the outbox's id-range partitions (PostgreSQL; ADR 013).

The migration moves an existing outbox on every backend: on PostgreSQL the table as it was
becomes the partition `outbox_p0` of a table partitioned by id range, on SQLite and MariaDB
nothing changes; either way every row keeps its id and status, and the relay claims the
pending ones. Prune empties and drops a partition only when every row in it may go."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from infra.db import make_engine
from infra.dbadmin import create_database_if_missing, drop_all_tables
from infra.migrate import upgrade
from outbox import OutboxStatus, outbox_table
from outbox import partitions as parts
from outbox.prune import plan, prune
from relay import store
from tests.conftest import SERVER_URLS

pytestmark = pytest.mark.integration
o = outbox_table
OLD = datetime.now(UTC) - timedelta(days=10)


def _fresh(kind: str, tmp_path: Path) -> Engine:
    """An empty database of its own (not the shared test one) on `kind`."""
    if kind == "sqlite":
        return make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    url = make_url(SERVER_URLS[kind])
    url = url.set(database=f"{url.database}_migrate")
    rendered = url.render_as_string(hide_password=False)
    try:
        create_database_if_missing(rendered)
    except OperationalError as exc:  # a missing server skips, as the fixtures do
        pytest.skip(f"{kind} is not reachable: {exc}")
    engine = make_engine(rendered)
    drop_all_tables(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def at_0014(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    engine = _fresh(request.param, tmp_path)
    upgrade(engine, "0014")
    yield engine
    engine.dispose()


def _rows(n: int, *, status: str, start: int = 0) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"e-{status}-{start + i}",
            "topic": "t",
            "key": f"k{(start + i) % 3}",
            "shard": (start + i) % 3 % 2,
            "type": "x",
            "payload": json.dumps({"n": start + i}),
            "headers": "{}",
            "created_at": OLD,
            "available_at": OLD,
            "status": status,
            "published_at": OLD if status == OutboxStatus.PUBLISHED else None,
        }
        for i in range(n)
    ]


def _snapshot(engine: Engine) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(select(o.c.id, o.c.key, o.c.status).order_by(o.c.id))
        ]


def test_the_migration_moves_an_existing_outbox_with_pending_and_published_rows(
    at_0014: Engine,
) -> None:
    engine = at_0014
    with engine.begin() as conn:
        conn.execute(insert(o), _rows(6, status=OutboxStatus.PUBLISHED))
        conn.execute(insert(o), _rows(4, status=OutboxStatus.PENDING, start=6))
    before = _snapshot(engine)

    upgrade(engine)

    assert _snapshot(engine) == before
    with engine.begin() as conn:
        claimed = store.claim(conn, {0: 100, 1: 100})
        assert sorted(r.id for r in claimed) == [i for i, _, s in before if s == "pending"]
        conn.execute(insert(o), _rows(1, status=OutboxStatus.PENDING, start=10))
        newest = conn.execute(select(func.max(o.c.id))).scalar_one()
        assert newest > before[-1][0]  # the ids go on where they were
        partitioned = parts.is_partitioned(conn)
        names = [p.name for p in parts.partitions(conn)] if partitioned else []
    assert partitioned == (engine.dialect.name == "postgresql")
    if partitioned:
        assert names[0] == "outbox_p0"  # the table as it was, not copied
        assert len(names) == 1 + parts.AHEAD


@pytest.fixture
def partitioned(tmp_path: Path) -> Iterator[Engine]:
    engine = _fresh("postgresql", tmp_path)
    upgrade(engine)
    yield engine
    engine.dispose()


def _prune(engine: Engine) -> int:
    with engine.connect() as conn:
        p = plan(conn, datetime.now(UTC), older_than=timedelta(days=1), dedup_window=timedelta(0))
    return prune(engine, p).partitions_dropped


def test_prune_drops_a_partition_only_once_every_row_in_it_may_go(partitioned: Engine) -> None:
    engine = partitioned
    with engine.begin() as conn:
        conn.execute(insert(o), _rows(50, status=OutboxStatus.PUBLISHED))
        conn.execute(insert(o), _rows(1, status=OutboxStatus.PENDING, start=50))
        first = parts.partitions(conn)[1]
        # The sequence moves into the next partition: the first one is wholly in use.
        conn.execute(text("SELECT setval('outbox_id_seq', :v)"), {"v": first.upper + 5})
        conn.execute(insert(o), _rows(3, status=OutboxStatus.PENDING, start=60))

    _prune(engine)  # a pending row keeps its partition (its published rows go one by one)
    with engine.connect() as conn:
        assert first.name in {p.name for p in parts.partitions(conn)}
        assert conn.execute(select(func.count()).select_from(o)).scalar_one() == 4
    with engine.begin() as conn:
        conn.execute(
            update(o)
            .where(o.c.id < first.upper)
            .values(status=OutboxStatus.PUBLISHED, published_at=OLD)
        )

    assert _prune(engine) >= 1
    with engine.connect() as conn:
        left = {p.name for p in parts.partitions(conn)}
        statuses = conn.execute(select(o.c.status)).scalars().all()
        tables = set(conn.execute(text("SELECT tablename FROM pg_tables")).scalars())
    assert first.name not in left and first.name not in tables  # emptied, detached, dropped
    assert statuses == ["pending"] * 3  # the next partition's rows stay


def test_partitions_are_made_ahead_and_a_write_past_them_still_lands(partitioned: Engine) -> None:
    engine = partitioned
    with engine.begin() as conn:
        top = parts.partitions(conn)[-1]
        conn.execute(text("SELECT setval('outbox_id_seq', :v)"), {"v": top.upper + 10})
        conn.execute(insert(o), _rows(1, status=OutboxStatus.PENDING))  # past every partition
        caught = conn.execute(text("SELECT count(*) FROM outbox_default")).scalar_one()
    assert caught == 1  # no partition yet: the DEFAULT partition takes it, the write succeeds

    created = parts.ensure_ahead(engine)

    assert len(created) == parts.AHEAD
    with engine.connect() as conn:
        ranges = parts.partitions(conn)
        last = conn.execute(select(func.max(o.c.id))).scalar_one()
    assert ranges[-1].upper >= last + parts.AHEAD * parts.DEFAULT_WIDTH
    assert all(p.lower is None or p.lower > last for p in ranges if p.upper > top.upper)


def test_two_relays_making_partitions_at_once_do_not_collide(partitioned: Engine) -> None:
    """The relays of `outbox relay --processes 2` both keep partitions ahead: one creates,
    the other finds the advisory lock taken and leaves it to the next call."""
    engine = partitioned
    with engine.begin() as conn:
        top = parts.partitions(conn)[-1]
        conn.execute(text("SELECT setval('outbox_id_seq', :v)"), {"v": top.upper - 5})
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def make() -> None:
        try:
            results.append(parts.ensure_ahead(engine))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(len(r) for r in results) == parts.AHEAD
    with engine.connect() as conn:
        ranges = parts.partitions(conn)
    assert all(a.upper == b.lower for a, b in pairwise(ranges))
