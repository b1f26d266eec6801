"""Shard leases on every backend: fair shares, rebalancing, takeover after expiry, fencing."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, false, select, text, update

import relay.leases
from outbox import OutboxStatus, outbox_table, relay_instances_table, relay_leases_table
from outbox.types import utcnow
from relay import LeaseKeeper, share_of, store
from tests.kafka_helpers import envelopes, insert

pytestmark = pytest.mark.integration
SHARDS = 8


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def keeper(engine: Engine, name: str, clock: Clock, ttl: float = 10.0) -> LeaseKeeper:
    k = LeaseKeeper(engine, shards=SHARDS, ttl_s=ttl, instance_id=name, clock=clock)
    k.register()
    return k


@pytest.mark.parametrize("instances", [1, 2, 3, 5, 8, 11])
def test_shares_cover_every_shard_once_and_differ_by_at_most_one(instances: int) -> None:
    alive = [f"relay-{i}" for i in range(instances)]
    shares = [share_of(name, alive, 16) for name in alive]
    assert sorted(s for share in shares for s in share) == list(range(16))
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


def test_a_joining_instance_gets_half_once_the_holder_lets_go(engine: Engine) -> None:
    clock = Clock()
    a = keeper(engine, "a", clock)
    a.tick()
    assert set(a.held()) == set(range(SHARDS))

    b = keeper(engine, "b", clock)
    b.tick()
    assert b.held() == {}  # a's leases are live: b waits, never steals
    a.tick()  # a sees b, stops claiming b's share...
    assert len(a.held()) == SHARDS // 2
    a.release_pending()  # ...and gives it back between batches
    b.tick()

    assert len(b.held()) == SHARDS // 2
    assert set(a.held()).isdisjoint(b.held())
    assert set(a.held()) | set(b.held()) == set(range(SHARDS))


def test_a_dead_instances_leases_are_taken_over_after_expiry_with_a_new_epoch(
    engine: Engine,
) -> None:
    clock = Clock()
    a = keeper(engine, "a", clock, ttl=10)
    a.tick()
    epochs = a.held()
    b = keeper(engine, "b", clock, ttl=10)
    clock.advance(5)
    b.tick()
    assert b.held() == {}  # not expired yet

    clock.advance(6)  # a never heartbeats again: its leases expire
    b.tick()

    assert set(b.held()) == set(range(SHARDS))
    assert all(b.held()[s] == epochs[s] + 1 for s in range(SHARDS))
    assert a.held() == {}  # a's own view has expired too: it stops sending


def test_a_stale_lease_holder_cannot_mark_rows(engine: Engine) -> None:
    clock = Clock()
    insert(engine, envelopes("t", keys=4, per_key=2), shards=SHARDS)
    a = keeper(engine, "a", clock, ttl=10)
    a.tick()
    a_epochs = a.held()
    with engine.connect() as conn:
        rows = store.claim(conn, dict.fromkeys(a_epochs, 100))
    assert len(rows) == 8
    # a stalls (GC pause, SIGSTOP) past its TTL; b takes over every shard.
    clock.advance(11)
    b = keeper(engine, "b", clock, ttl=10)
    b.tick()

    stale_acks = [store.Ack(r.id, r.shard, a_epochs[r.shard], 0, i) for i, r in enumerate(rows)]
    stale_dead = [store.Failure(rows[0].id, a_epochs[rows[0].shard], "too big")]
    with engine.begin() as conn:
        assert store.mark_published(conn, "a", stale_acks, clock()) == 0
        assert store.mark_dead(conn, "a", stale_dead, clock()) == 0
        # Even with b's epochs, a is not the owner.
        forged = [store.Ack(r.id, r.shard, b.held()[r.shard], 0, 0) for r in rows]
        assert store.mark_published(conn, "a", forged, clock()) == 0
    with engine.connect() as conn:
        statuses = set(conn.execute(select(outbox_table.c.status)).scalars())
    assert statuses == {OutboxStatus.PENDING}

    fresh = [store.Ack(r.id, r.shard, b.held()[r.shard], 1, i) for i, r in enumerate(rows)]
    with engine.begin() as conn:
        assert store.mark_published(conn, "b", fresh, clock()) == len(rows)
    with engine.connect() as conn:
        marked = conn.execute(
            select(outbox_table.c.status, outbox_table.c.kafka_offset).order_by(outbox_table.c.id)
        ).all()
    assert {status for status, _ in marked} == {OutboxStatus.PUBLISHED}
    assert sorted(offset for _, offset in marked) == list(range(len(rows)))


def test_release_all_frees_the_leases_and_leaves(engine: Engine) -> None:
    clock = Clock()
    a = keeper(engine, "a", clock)
    a.tick()
    a.release_all()
    with engine.connect() as conn:
        owners = set(conn.execute(select(relay_leases_table.c.owner)).scalars())
        instances = list(conn.execute(select(relay_instances_table.c.instance_id)).scalars())
    assert owners == {None}
    assert instances == []
    b = keeper(engine, "b", clock)
    b.tick()  # at once, no waiting for a TTL
    assert set(b.held()) == set(range(SHARDS))


def test_marks_find_rows_by_primary_key_even_when_statistics_say_pending_is_rare(
    postgres_db: Engine,
) -> None:
    """A backlog that appears after ANALYZE must not turn each mark into a scan of every
    pending row (the status index looks best to a planner that expects none)."""
    insert(postgres_db, envelopes("t", keys=50, per_key=40), shards=SHARDS)
    with postgres_db.begin() as conn:
        conn.execute(update(outbox_table).values(status=OutboxStatus.PUBLISHED))
    with postgres_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE outbox"))
    with postgres_db.begin() as conn:
        conn.execute(update(outbox_table).values(status=OutboxStatus.PENDING))
        found = conn.execute(select(outbox_table.c.id, outbox_table.c.shard).limit(500)).all()
        acks = [store.Ack(i, shard, 1, 0, i) for i, shard in found]
        sql, params = store.published_statement(conn.dialect, "a", acks, utcnow())
        plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + sql, params).scalars())
    # On the partitioned outbox (ADR 013) each partition's own index is named in the plan.
    assert re.search(r"outbox(_p\d+)?_pkey", plan)
    assert "status_shard_id" not in plan


def test_instances_silent_for_an_hour_are_forgotten(engine: Engine) -> None:
    clock = Clock()
    keeper(engine, "crashed", clock).tick()
    clock.advance(2 * 3600)
    alive = keeper(engine, "alive", clock)
    alive.tick()

    assert alive.forget_dead_instances() == 1
    with engine.connect() as conn:
        names = list(conn.execute(select(relay_instances_table.c.instance_id)).scalars())
    assert names == ["alive"]


def test_registering_beside_an_instance_that_just_created_some_lease_rows(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two relays start together: the second read no lease rows, the first then wrote some;
    the second's bulk insert conflicts and it adds the rest one by one."""
    clock = Clock()
    LeaseKeeper(engine, shards=4, ttl_s=10, instance_id="first", clock=clock).register()
    real_select = relay.leases.select
    monkeypatch.setattr(relay.leases, "select", lambda *cols: real_select(*cols).where(false()))
    second = LeaseKeeper(engine, shards=SHARDS, ttl_s=10, instance_id="second", clock=clock)
    second.register()
    monkeypatch.undo()

    with engine.connect() as conn:
        shards = sorted(conn.execute(select(relay_leases_table.c.shard)).scalars())
    assert shards == list(range(SHARDS))
    second.tick()  # and can take its share of every one of them
    assert set(second.held()) == share_of("second", ["first", "second"], SHARDS)
