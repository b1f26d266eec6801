"""The relay's pipeline (ADR 003): while one batch is at the broker the next is claimed and
the one before is written. Its failure paths: a key failing in the batch in flight while the
next batch already holds the key's later rows, a stop with a batch in flight, a lease lost
between claim and mark, the database dropping mid-pipeline; and the one-statement marks."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import DBAPIError

from infra.db import make_engine
from outbox import OutboxStatus, outbox_table, relay_leases_table
from outbox.types import utcnow
from relay import LeaseKeeper, Relay, RelayConfig, store
from relay.claiming import Claimer
from relay.publisher import Message
from tests.fakes import InMemoryPublisher
from tests.kafka_helpers import envelopes, insert, wait_for

pytestmark = pytest.mark.integration


def make_relay(engine: Engine, publisher: InMemoryPublisher, **config: Any) -> Relay:
    settings: dict[str, Any] = {
        "shards": 1,  # every key in one shard: consecutive batches share keys
        "lease_ttl_s": 5.0,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "poll_max_s": 0.05,
        "batch_size": 4,
        **config,
    }
    return Relay(engine, lambda: publisher, RelayConfig(**settings))


def outbox(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox_table).order_by(outbox_table.c.id)))


def sent_versions(messages: Sequence[Message]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for msg in messages:
        body = json.loads(msg.value)
        seen.setdefault(body["aggregate"], []).append(body["v"])
    return seen


def all_published(engine: Engine) -> bool:
    """False also while the watcher's own pooled connection was just killed."""
    try:
        return all(r.status == OutboxStatus.PUBLISHED for r in outbox(engine))
    except DBAPIError:
        return False


class Recording(InMemoryPublisher):
    """Keeps every batch handed to it, in order (what the broker was asked to take)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches: list[list[Message]] = []

    def send_batch(self, messages: Sequence[Message]) -> Any:
        self.batches.append(list(messages))
        return super().send_batch(messages)


def record_claims(relay: Relay) -> list[tuple[list[store.Claimed], list[store.Claimed]]]:
    """Every claim the relay makes: (the batch in flight it left out, the rows it got)."""
    claims: list[tuple[list[store.Claimed], list[store.Claimed]]] = []
    claimer: Claimer = relay._claimer
    real = claimer.claim

    def claim(held: dict[int, int], now: Any, in_flight: Sequence[store.Claimed] = ()) -> Any:
        rows = real(held, now, in_flight)
        claims.append((list(in_flight), list(rows)))
        return rows

    claimer.claim = claim  # type: ignore[method-assign]
    return claims


def test_a_key_failing_in_flight_keeps_its_later_rows_of_the_next_batch_back(
    engine: Engine,
) -> None:
    """Batch N fails for agg-1 while batch N+1, claimed meanwhile, holds agg-1's later rows:
    they are not sent after N's failure; agg-1 goes out later from its head, in order."""
    publisher = Recording(topics={"t": 3}, failing_keys={b"agg-1"})
    insert(engine, envelopes("t", keys=2, per_key=6), shards=1)
    relay = make_relay(engine, publisher)
    claims = record_claims(relay)
    real_flush = publisher.flush

    def flush_once_failing(batch: Any, timeout_s: float) -> Any:
        outcomes = real_flush(batch, timeout_s)
        publisher.failing_keys.clear()  # the partition recovers after one failed batch
        return outcomes

    publisher.flush = flush_once_failing  # type: ignore[method-assign]
    worker = threading.Thread(target=relay.run, daemon=True)
    worker.start()
    try:
        wait_for(lambda: all(r.status == OutboxStatus.PUBLISHED for r in outbox(engine)))
    finally:
        relay.stop()
        worker.join(timeout=10)

    # The failure really met a next batch holding agg-1's later rows (claimed in flight).
    first_in_flight, behind = claims[1]
    assert [r.key for r in first_in_flight].count("agg-1") >= 1
    assert "agg-1" in {r.key for r in behind}
    # ... and those rows were not in the batch sent after the failure.
    assert b"agg-1" not in {m.key for m in publisher.batches[1]}
    assert sent_versions(publisher.messages("t")) == {
        "agg-0": [1, 2, 3, 4, 5, 6],
        "agg-1": [1, 2, 3, 4, 5, 6],
    }
    head = outbox(engine)[1]  # agg-1 v1: failed once, then published
    assert head.key == "agg-1" and head.attempts == 1


def test_stopping_with_a_batch_in_flight_writes_its_marks_and_leaves_the_next_pending(
    engine: Engine,
) -> None:
    publisher = Recording(topics={"t": 3})
    insert(engine, envelopes("t", keys=2, per_key=6), shards=1)
    relay = make_relay(engine, publisher)
    claims = record_claims(relay)
    real_flush = publisher.flush

    def flush_then_stop(batch: Any, timeout_s: float) -> Any:
        if publisher.flushes == 1:  # the second batch is at the broker: SIGTERM
            relay.stop()
        return real_flush(batch, timeout_s)

    publisher.flush = flush_then_stop  # type: ignore[method-assign]
    stats = relay.run()

    rows = outbox(engine)
    published = [r for r in rows if r.status == OutboxStatus.PUBLISHED]
    assert len(publisher.batches) == 2  # nothing sent after the stop
    assert stats.published == len(published) == 8  # both batches sent were written
    # A third batch had been claimed behind the second: never sent, still pending, untouched.
    assert any(in_flight and behind for in_flight, behind in claims)
    pending = [r for r in rows if r.status == OutboxStatus.PENDING]
    assert len(pending) == 4 and all(r.attempts == 0 for r in pending)
    assert {r.id for r in published} == {m.outbox_id for b in publisher.batches for m in b}
    with engine.connect() as conn:
        assert set(conn.execute(select(relay_leases_table.c.owner)).scalars()) == {None}

    # The next relay sends the rest, in order, nothing twice.
    make_relay(engine, publisher).run(once=True)
    assert sent_versions(publisher.messages("t")) == {
        "agg-0": [1, 2, 3, 4, 5, 6],
        "agg-1": [1, 2, 3, 4, 5, 6],
    }


def test_a_lease_lost_between_claim_and_mark_marks_nothing(engine: Engine) -> None:
    """Another instance takes the shard while the first batch is at the broker: that batch's
    marks, and those of anything claimed under the old epoch, are fenced."""
    publisher = Recording(topics={"t": 3})
    insert(engine, envelopes("t", keys=2, per_key=4), shards=1)
    relay = make_relay(engine, publisher, lease_ttl_s=3.0)
    real_flush = publisher.flush

    def flush_after_a_takeover(batch: Any, timeout_s: float) -> Any:
        if publisher.flushes == 0:
            with engine.begin() as conn:
                conn.execute(
                    update(relay_leases_table)
                    .where(relay_leases_table.c.shard == 0)
                    .values(
                        owner="thief",
                        epoch=relay_leases_table.c.epoch + 1,
                        expires_at=utcnow() + timedelta(seconds=60),
                    )
                )
        return real_flush(batch, timeout_s)

    publisher.flush = flush_after_a_takeover  # type: ignore[method-assign]
    done = threading.Event()
    worker = threading.Thread(target=lambda: (relay.run(once=True), done.set()), daemon=True)
    worker.start()
    assert done.wait(30), "the pass did not end once the lease was gone"

    rows = outbox(engine)
    assert {r.status for r in rows} == {OutboxStatus.PENDING}
    assert all(r.published_at is None and r.kafka_offset is None for r in rows)
    assert relay.stats.published == 0
    assert relay.stats.fenced >= 4  # at least the batch in flight at the takeover
    with engine.connect() as conn:
        lease = conn.execute(select(relay_leases_table)).one()
    assert lease.owner == "thief"


def test_the_database_dropping_mid_pipeline_loses_nothing_and_keeps_order(
    postgres_db: Engine,
) -> None:
    """Every connection is killed while a batch is at the broker and the database thread
    writes and claims: rows not written stay pending and go again; first deliveries are
    complete and in order, duplicates at most the two batches in the pipeline."""
    publisher = Recording(topics={"t": 3})
    envs = envelopes("t", keys=3, per_key=8)
    insert(postgres_db, envs, shards=1)
    relay = make_relay(postgres_db, publisher, batch_size=6)
    killer = make_engine(postgres_db.url.render_as_string(hide_password=False))
    real_flush = publisher.flush
    killed: list[int] = []

    def flush_while_the_database_drops(batch: Any, timeout_s: float) -> Any:
        if publisher.flushes == 1:
            with killer.connect() as conn:
                killed.append(
                    conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).scalar_one()
                )
        return real_flush(batch, timeout_s)

    publisher.flush = flush_while_the_database_drops  # type: ignore[method-assign]
    worker = threading.Thread(target=relay.run, daemon=True)
    worker.start()
    try:
        wait_for(lambda: all_published(killer), timeout_s=60)
    finally:
        relay.stop()
        worker.join(timeout=10)
        killer.dispose()
        postgres_db.dispose()
    assert not worker.is_alive()
    assert killed and killed[0] >= 1
    sent = sent_versions(publisher.messages("t"))
    assert {key: list(dict.fromkeys(vs)) for key, vs in sent.items()} == {
        f"agg-{k}": list(range(1, 9)) for k in range(3)
    }
    assert sum(len(vs) for vs in sent.values()) - len(envs) <= 2 * 6


def test_one_statement_writes_every_outcome_of_a_batch_fenced(engine: Engine) -> None:
    """Published, dead and deferred rows in one fenced UPDATE, on every backend; the rows of
    a shard whose lease moved are left as they were and counted out."""
    insert(engine, envelopes("t", keys=8, per_key=2), shards=2)
    keeper = LeaseKeeper(engine, shards=2, ttl_s=10.0, instance_id="a")
    keeper.register()
    keeper.tick()
    epochs = keeper.held()
    assert set(epochs) == {0, 1}
    with engine.connect() as conn:
        rows = store.claim(conn, {0: 100, 1: 100})
    now = utcnow()
    until = now + timedelta(seconds=30)
    ok = [r for r in rows if r.shard == 0]
    assert len(ok) >= 3
    acks = [store.Ack(r.id, 0, epochs[0], 2, 40 + i) for i, r in enumerate(ok[:-2])]
    dead = [store.Failure(ok[-2].id, epochs[0], "too big")]
    retry = [store.Failure(ok[-1].id, epochs[0], "NotLeader")]
    with engine.begin() as conn:
        marked = store.mark_batch(conn, "a", acks, dead, retry, until=until, now=now)
    assert marked == store.Marked(len(acks), 1, 1)
    by_id = {r.id: r for r in outbox(engine)}
    for i, ack in enumerate(acks):
        row = by_id[ack.outbox_id]
        assert row.status == OutboxStatus.PUBLISHED and row.kafka_offset == 40 + i
        assert row.kafka_partition == 2 and row.published_at is not None and row.attempts == 0
    gone = by_id[dead[0].outbox_id]
    assert gone.status == OutboxStatus.DEAD and gone.last_error == "too big" and gone.attempts == 1
    later = by_id[retry[0].outbox_id]
    assert later.status == OutboxStatus.PENDING and later.attempts == 1
    assert later.last_error == "NotLeader" and later.published_at is None
    assert abs((later.available_at - until).total_seconds()) < 1

    # Shard 1's lease moves to another epoch: its rows are fenced, shard 0's are written.
    with engine.begin() as conn:
        conn.execute(
            update(relay_leases_table)
            .where(relay_leases_table.c.shard == 1)
            .values(epoch=relay_leases_table.c.epoch + 1)
        )
    moved = [r for r in rows if r.shard == 1]
    assert len(moved) >= 2
    acks = [store.Ack(r.id, 1, epochs[1], 0, i) for i, r in enumerate(moved[:-1])]
    dead = [store.Failure(moved[-1].id, epochs[1], "too big")]
    retry = [store.Failure(later.id, epochs[0], "NotLeader again")]
    with engine.begin() as conn:
        marked = store.mark_batch(conn, "a", acks, dead, retry, until=until, now=utcnow())
    assert marked == store.Marked(0, 0, 1)
    by_id = {r.id: r for r in outbox(engine)}
    assert {by_id[r.id].status for r in moved} == {OutboxStatus.PENDING}
    assert all(by_id[r.id].attempts == 0 for r in moved)
    assert by_id[later.id].attempts == 2 and by_id[later.id].last_error == "NotLeader again"
