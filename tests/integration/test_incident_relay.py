"""Park, release, skip, requeue and replay against the real relay and the embedded broker,
on SQLite and PostgreSQL: what reaches Kafka, in which order, with which headers."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update

from infra.broker import EmbeddedBroker
from outbox import OutboxStatus, outbox_table
from outbox.audit import entries
from outbox.parking import park, release, requeue, skip
from outbox.replay import ReplayFilter, replay
from outbox.types import utcnow
from tests import incident_helpers
from tests.incident_helpers import ids_of
from tests.integration.test_relay_kafka import SHARDS, relay_for
from tests.kafka_helpers import consume, envelopes, fresh_topic, insert

pytestmark = [pytest.mark.integration, incident_helpers.SQLITE_AND_POSTGRES]

o = outbox_table
db = incident_helpers.db  # the fixture: SQLite and PostgreSQL


def _payload_order(records: list, key: str) -> list[int]:
    return [json.loads(r.value)["v"] for r in records if r.key == key]


def test_a_parked_key_holds_also_later_rows_while_others_flow_and_release_keeps_order(
    db: Engine, kafka: EmbeddedBroker
) -> None:
    topic = fresh_topic(kafka.bootstrap_servers)
    insert(db, envelopes(topic, keys=3, per_key=2), shards=SHARDS)
    with db.begin() as conn:
        park(conn, "agg-1", actor="ops", reason="poisoned head", now=utcnow())
    # Commands keep writing the parked key (and the others) after the park.
    insert(db, envelopes(topic, keys=3, per_key=4)[6:], shards=SHARDS)

    relay_for(db, kafka.bootstrap_servers).run(once=True)

    held = ids_of(db, o.c.key == "agg-1", o.c.status == OutboxStatus.PENDING)
    assert len(held) == 4  # two from before the park, two committed after it
    assert ids_of(db, o.c.key != "agg-1", o.c.status == OutboxStatus.PENDING) == []
    records = consume(kafka.bootstrap_servers, topic, 8, quiet_s=0.5)
    assert {r.key for r in records} == {"agg-0", "agg-2"}

    with db.begin() as conn:
        release(conn, "agg-1", actor="ops", reason="fixed", now=utcnow())
    relay_for(db, kafka.bootstrap_servers).run(once=True)

    records = consume(kafka.bootstrap_servers, topic, 12)
    assert _payload_order(records, "agg-1") == [1, 2, 3, 4]
    with db.connect() as conn:
        assert [e.action for e in entries(conn)] == ["release", "park"]


def test_skip_gives_up_a_failing_head_so_the_key_continues_and_requeue_sends_it_again(
    db: Engine, kafka: EmbeddedBroker
) -> None:
    topic = fresh_topic(kafka.bootstrap_servers)
    insert(db, envelopes(topic, keys=1, per_key=3), shards=SHARDS)
    head = ids_of(db)[0]
    # The head keeps failing: deferred far ahead, so the relay holds its key back.
    with db.begin() as conn:
        conn.execute(
            update(o)
            .where(o.c.id == head)
            .values(
                attempts=7, last_error="broker said no", available_at=utcnow() + timedelta(hours=1)
            )
        )
    relay_for(db, kafka.bootstrap_servers).run(once=True)
    assert len(ids_of(db, o.c.status == OutboxStatus.PENDING)) == 3  # all held behind the head

    with db.begin() as conn:
        skip(conn, head, actor="ops", reason="poison", now=utcnow())
    relay_for(db, kafka.bootstrap_servers).run(once=True)
    assert _payload_order(consume(kafka.bootstrap_servers, topic, 2), "agg-0") == [2, 3]
    with db.connect() as conn:
        row = conn.execute(select(o.c.status, o.c.last_error).where(o.c.id == head)).one()
    assert row.status == OutboxStatus.DEAD
    assert row.last_error == "skipped by ops: poison"

    with db.begin() as conn:
        result = requeue(conn, head, actor="ops", reason="fixed", now=utcnow())
    assert "already published" in result.note
    relay_for(db, kafka.bootstrap_servers).run(once=True)
    assert _payload_order(consume(kafka.bootstrap_servers, topic, 3), "agg-0") == [2, 3, 1]
    with db.connect() as conn:
        attempts = conn.execute(select(o.c.attempts).where(o.c.id == head)).scalar_one()
    assert attempts == 0


def test_a_replayed_range_reaches_kafka_again_in_original_order_with_the_replay_header(
    db: Engine, kafka: EmbeddedBroker
) -> None:
    topic = fresh_topic(kafka.bootstrap_servers)
    envs = envelopes(topic, keys=4, per_key=5)
    insert(db, envs, shards=SHARDS)
    relay_for(db, kafka.bootstrap_servers).run(once=True)
    originals = ids_of(db, o.c.topic == topic)
    first, last = originals[4], originals[15]  # a middle range, across keys

    result = replay(
        db,
        ReplayFilter(from_id=first, to_id=last, topics=(topic,)),
        actor="ops",
        reason="consumer lost data",
        shards=SHARDS,
        chunk=5,  # several transactions
    )
    assert (result.count, result.first_id, result.last_id) == (12, first, last)
    relay_for(db, kafka.bootstrap_servers).run(once=True)

    records = consume(kafka.bootstrap_servers, topic, len(envs) + 12)
    copies = [r for r in records if "x-replay-id" in r.headers]
    assert len(copies) == 12
    assert {r.headers["x-replay-id"] for r in copies} == {result.replay_id}
    assert {r.headers["ce_replay"] for r in copies} == {result.replay_id}
    assert all("x-replay-rerun" not in r.headers for r in copies)
    by_event = {e.event_id: e for e in envs}
    for record in copies:
        # Same event id (idempotent consumers skip it), same key and payload.
        assert by_event[record.headers["ce_id"]].payload == record.value
    # Per key, the copies arrive in the originals' order, after the originals.
    for key in {r.key for r in copies}:
        versions = [
            json.loads(r.value)["v"] for r in sorted(copies, key=lambda r: r.offset) if r.key == key
        ]
        assert versions == sorted(versions)
    with db.connect() as conn:
        rows = conn.execute(
            select(o.c.replay_of, o.c.status)
            .where(o.c.replay_id == result.replay_id)
            .order_by(o.c.id)
        ).all()
    assert [r.replay_of for r in rows] == originals[4:16]
    assert {r.status for r in rows} == {OutboxStatus.PUBLISHED}


def test_replay_with_rerun_asks_consumers_to_run_effects_again(
    db: Engine, kafka: EmbeddedBroker
) -> None:
    topic = fresh_topic(kafka.bootstrap_servers)
    insert(db, envelopes(topic, keys=1, per_key=2), shards=SHARDS)
    relay_for(db, kafka.bootstrap_servers).run(once=True)

    result = replay(
        db,
        ReplayFilter(key="agg-0", topics=(topic,)),
        actor="ops",
        reason=None,
        shards=SHARDS,
        rerun=True,
    )
    relay_for(db, kafka.bootstrap_servers).run(once=True)

    copies = [r for r in consume(kafka.bootstrap_servers, topic, 4) if "x-replay-id" in r.headers]
    assert [r.headers["x-replay-rerun"] for r in copies] == ["true", "true"]
    assert {r.headers["x-replay-id"] for r in copies} == {result.replay_id}
