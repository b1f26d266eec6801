"""The relay loop with a working in-memory publisher: failures, ordering, shutdown, metrics."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import DBAPIError
from structlog.testing import capture_logs

from infra.db import make_engine
from outbox import (
    OutboxStatus,
    is_missing_schema,
    outbox_rows,
    outbox_table,
    relay_leases_table,
)
from outbox.stats import backlog
from outbox.types import utcnow
from relay import Relay, RelayConfig
from tests.fakes import InMemoryPublisher
from tests.kafka_helpers import envelopes, insert, wait_for

pytestmark = pytest.mark.integration
SHARDS = 4


def make_relay(engine: Engine, publisher: InMemoryPublisher, **config: object) -> Relay:
    settings = {
        "shards": SHARDS,
        "lease_ttl_s": 5.0,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "poll_max_s": 0.05,
        **config,
    }
    return Relay(engine, lambda: publisher, RelayConfig(**settings))  # type: ignore[arg-type]


def rows(engine: Engine) -> list:  # type: ignore[type-arg]
    with engine.connect() as conn:
        return list(conn.execute(select(outbox_table).order_by(outbox_table.c.id)))


def versions(publisher: InMemoryPublisher, topic: str) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for msg in publisher.messages(topic):
        body = json.loads(msg.value)
        seen.setdefault(body["aggregate"], []).append(body["v"])
    return seen


def test_a_failing_key_waits_in_order_while_other_keys_flow(engine: Engine) -> None:
    publisher = InMemoryPublisher(topics={"t": 3}, failing_keys={b"agg-1"})
    insert(engine, envelopes("t", keys=3, per_key=3), shards=SHARDS)
    relay = make_relay(engine, publisher)

    relay.run(once=True)

    by_key = {r.key: r for r in reversed(rows(engine))}  # each key's first row
    head = by_key["agg-1"]
    assert head.status == OutboxStatus.PENDING
    assert head.attempts == 1
    assert "NotLeaderForPartition" in head.last_error
    assert head.available_at > head.created_at  # deferred with back-off
    sent = versions(publisher, "t")
    assert sent == {"agg-0": [1, 2, 3], "agg-2": [1, 2, 3]}  # agg-1's later rows held back

    # The failure clears; once the deferral is due, agg-1 goes out in version order.
    publisher.failing_keys.clear()
    time.sleep(0.3)
    make_relay(engine, publisher).run(once=True)
    assert versions(publisher, "t")["agg-1"] == [1, 2, 3]
    assert {r.status for r in rows(engine)} == {OutboxStatus.PUBLISHED}


def test_one_pass_tries_a_failing_key_once_even_when_its_back_off_ends_within_the_pass(
    engine: Engine,
) -> None:
    # A loaded machine makes the pass outlast the back-off; here the back-off is 1 ms.
    publisher = InMemoryPublisher(topics={"t": 3}, failing_keys={b"agg-1"})
    insert(engine, envelopes("t", keys=3, per_key=3), shards=SHARDS)
    relay = make_relay(engine, publisher, backoff_base_s=0.001, backoff_max_s=0.001, batch_size=2)

    one_pass = threading.Thread(target=relay.run, kwargs={"once": True}, daemon=True)
    one_pass.start()
    one_pass.join(timeout=30)
    if one_pass.is_alive():  # it went round agg-1 for ever
        relay.stop()
        pytest.fail("the pass never ended")

    heads = {r.key: r for r in reversed(rows(engine))}
    assert heads["agg-1"].attempts == 1
    assert versions(publisher, "t") == {"agg-0": [1, 2, 3], "agg-2": [1, 2, 3]}


def test_a_row_that_can_never_be_sent_is_dead_with_its_reason(engine: Engine) -> None:
    publisher = InMemoryPublisher(topics={"t": 3}, rejected_keys={b"agg-0"})
    insert(engine, envelopes("t", keys=2, per_key=2), shards=SHARDS)
    with engine.begin() as conn:  # and one row whose headers are not JSON at all
        last = conn.execute(select(outbox_table.c.id).order_by(outbox_table.c.id.desc())).first()
        assert last is not None
        conn.execute(
            update(outbox_table).where(outbox_table.c.id == last.id).values(headers="{oops")
        )

    stats = make_relay(engine, publisher).run(once=True)

    assert stats.dead == 3  # agg-0 v1, v2 refused; agg-1 v2 unreadable headers
    dead = [r for r in rows(engine) if r.status == OutboxStatus.DEAD]
    reasons = sorted(r.last_error.split(":")[0] for r in dead)
    assert reasons == [
        "MessageSizeTooLargeError",
        "MessageSizeTooLargeError",
        "headers are not valid JSON",
    ]
    assert versions(publisher, "t") == {"agg-1": [1]}


def test_broker_down_keeps_rows_pending_and_backs_off_then_resumes(engine: Engine) -> None:
    publisher = InMemoryPublisher(topics={"t": 3}, down=True)
    insert(engine, envelopes("t", keys=3, per_key=4), shards=SHARDS)
    relay = make_relay(engine, publisher)
    with capture_logs() as logs:
        worker = threading.Thread(target=relay.run, daemon=True)
        worker.start()
        wait_for(lambda: sum(e["event"] == "relay_broker_unavailable" for e in logs) >= 3)
        snapshot = rows(engine)
        publisher.down = False
        wait_for(lambda: all(r.status == OutboxStatus.PUBLISHED for r in rows(engine)))
        relay.stop()
        worker.join(timeout=10)
    assert {r.status for r in snapshot} == {OutboxStatus.PENDING}
    assert all(r.attempts >= 1 and "broker down" in r.last_error for r in snapshot)
    delays = [e["retry_in_s"] for e in logs if e["event"] == "relay_broker_unavailable"]
    assert delays[0] <= delays[-1] <= 0.2  # exponential, capped
    assert versions(publisher, "t") == {f"agg-{k}": [1, 2, 3, 4] for k in range(3)}


def test_stop_finishes_the_batch_in_flight_and_releases_the_leases(engine: Engine) -> None:
    publisher = InMemoryPublisher(topics={"t": 3}, in_flight_flushes=3)
    insert(engine, envelopes("t", keys=3, per_key=2), shards=SHARDS)
    relay = make_relay(engine, publisher)
    original_flush = publisher.flush

    def flush_then_stop(batch, timeout_s):  # type: ignore[no-untyped-def]
        relay.stop()  # SIGTERM arrives while the batch waits for its acks
        return original_flush(batch, timeout_s)

    publisher.flush = flush_then_stop  # type: ignore[method-assign]
    stats = relay.run()

    assert stats.published == 6
    assert {r.status for r in rows(engine)} == {OutboxStatus.PUBLISHED}
    with engine.connect() as conn:
        assert set(conn.execute(select(relay_leases_table.c.owner)).scalars()) == {None}
    assert publisher.closed


def test_metrics_count_what_was_published_and_how_long_it_took(engine: Engine) -> None:
    publisher = InMemoryPublisher(topics={"t": 3}, rejected_keys={b"agg-2"})
    insert(engine, envelopes("t", keys=3, per_key=2), shards=SHARDS)
    relay = make_relay(engine, publisher)
    relay.run(once=True)
    relay._refresh_stats()  # what the lease thread does every stats interval

    registry = relay.metrics.registry
    assert registry.get_sample_value("outbox_published_total") == 4
    assert registry.get_sample_value("outbox_dead_total") == 2
    assert registry.get_sample_value("outbox_publish_latency_seconds_count") == 4
    assert registry.get_sample_value("outbox_backlog", {"status": "published"}) == 4
    assert registry.get_sample_value("outbox_backlog", {"status": "dead"}) == 2
    assert registry.get_sample_value("outbox_backlog", {"status": "pending"}) == 0
    assert registry.get_sample_value("outbox_oldest_pending_age_seconds") == 0


def test_a_lost_database_connection_is_replaced_and_publishing_goes_on(
    postgres_db: Engine,
) -> None:
    publisher = InMemoryPublisher(topics={"t": 3})
    relay = make_relay(postgres_db, publisher, poll_max_s=0.05)
    envs = envelopes("t", keys=4, per_key=6)
    with capture_logs() as logs:
        worker = threading.Thread(target=relay.run, daemon=True)
        worker.start()
        try:
            insert(postgres_db, envs[:8], shards=SHARDS)
            wait_for(
                lambda: sum(r.status == OutboxStatus.PUBLISHED for r in rows(postgres_db)) == 8
            )
            # The server drops every other connection: the relay's pool, LISTEN, heartbeat.
            with postgres_db.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert killed >= 1
            # The test's own pooled connections died too: write and watch on fresh ones.
            writer = make_engine(postgres_db.url.render_as_string(hide_password=False))
            insert(writer, envs[8:], shards=SHARDS)
            wait_for(lambda: all(r.status == OutboxStatus.PUBLISHED for r in rows(writer)))
            writer.dispose()
        finally:
            relay.stop()
            worker.join(timeout=10)
            postgres_db.dispose()  # no dead connection left in the pool for the next test
    assert not worker.is_alive()
    sent = versions(publisher, "t")
    # A batch sent but not marked when its connection died is sent again (at least once):
    # first deliveries are complete and in order, duplicates at most that batch.
    assert {key: list(dict.fromkeys(vs)) for key, vs in sent.items()} == {
        f"agg-{k}": [1, 2, 3, 4, 5, 6] for k in range(4)
    }
    assert sum(len(vs) for vs in sent.values()) - len(envs) <= len(envs[8:])
    events = {e["event"] for e in logs}
    assert events & {"relay_database_error", "listen_failed", "relay_heartbeat_failed"}


def test_backlog_counts_every_status_and_the_oldest_pending_age(engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        old = outbox_rows(
            envelopes("t", keys=2, per_key=1), shards=SHARDS, now=now - timedelta(seconds=30)
        )
        new = outbox_rows(
            envelopes("t", keys=1, per_key=1), shards=SHARDS, now=now - timedelta(seconds=5)
        )
        conn.execute(outbox_table.insert(), [*old, *new])
        first = conn.execute(select(func.min(outbox_table.c.id))).scalar_one()
        conn.execute(
            update(outbox_table).where(outbox_table.c.id == first).values(status=OutboxStatus.DEAD)
        )
    with engine.connect() as conn:
        figures = backlog(conn, now)
    assert figures.by_status == {"pending": 2, "published": 0, "dead": 1, "parked": 0}
    assert figures.oldest_pending_age_s == pytest.approx(30, abs=0.01)


def test_stopping_while_the_broker_never_answers_leaves_the_batch_pending(
    engine: Engine,
) -> None:
    """SIGTERM during an outage: wait the grace time for the batch in flight, then leave it
    pending for the next holder, release the leases and return."""
    publisher = InMemoryPublisher(topics={"t": 3}, in_flight_flushes=10**9)
    insert(engine, envelopes("t", keys=2, per_key=2), shards=SHARDS)
    relay = make_relay(engine, publisher, shutdown_grace_s=0.3)
    original_flush = publisher.flush

    def flush_then_stop(batch, timeout_s):  # type: ignore[no-untyped-def]
        relay.stop()
        return original_flush(batch, timeout_s)

    publisher.flush = flush_then_stop  # type: ignore[method-assign]
    with capture_logs() as logs:
        stats = relay.run()

    assert stats.published == 0
    assert {r.status for r in rows(engine)} == {OutboxStatus.PENDING}
    assert all(r.attempts == 0 for r in rows(engine))  # nothing was decided about them
    with engine.connect() as conn:
        assert set(conn.execute(select(relay_leases_table.c.owner)).scalars()) == {None}
    assert any(e["event"] == "relay_waiting_for_broker" for e in logs)
    assert publisher.closed


def test_a_missing_table_stops_the_relay_instead_of_retrying_forever(engine: Engine) -> None:
    """Not migrated (or dropped under it): no back-off loop, the error goes to the caller."""
    publisher = InMemoryPublisher(topics={"t": 3})
    relay = make_relay(engine, publisher)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            relay.run()
        except DBAPIError as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        wait_for(relay.leases.held)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE outbox RENAME TO outbox_gone"))
        worker.join(timeout=20)
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE outbox_gone RENAME TO outbox"))
    assert not worker.is_alive()
    assert len(failure) == 1
    assert is_missing_schema(failure[0])  # type: ignore[arg-type]
    with engine.connect() as conn:  # and it still let go of its leases
        assert set(conn.execute(select(relay_leases_table.c.owner)).scalars()) == {None}


def test_one_pass_ends_when_every_row_of_its_batch_fails(engine: Engine) -> None:
    """`run(once=True)` without a broker deadline is one pass: a batch that failed whole (only
    the failing key was due) is deferred like any failure instead of waited on for ever."""
    publisher = InMemoryPublisher(topics={"t": 3}, failing_keys={b"agg-0"})
    insert(engine, envelopes("t", keys=1, per_key=2), shards=SHARDS)
    done = threading.Event()
    runner = threading.Thread(
        target=lambda: (make_relay(engine, publisher).run(once=True), done.set()), daemon=True
    )
    runner.start()
    assert done.wait(30), "one pass did not end"
    head = rows(engine)[0]
    assert head.status == OutboxStatus.PENDING and head.attempts == 1
    assert head.available_at > head.created_at  # deferred with back-off
    assert versions(publisher, "t") == {}
