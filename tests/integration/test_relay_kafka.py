"""The relay against the embedded broker on every backend: what reaches Kafka, and how."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import Engine, func, select
from structlog.testing import capture_logs

from domain import CommandBus
from infra.broker import EmbeddedBroker, free_port
from outbox import OutboxStatus, outbox_table
from relay import KafkaPublisher, Publisher, Relay, RelayConfig, TopicsMissing
from tests.kafka_helpers import (
    assert_in_version_order,
    consume,
    envelopes,
    fresh_topic,
    insert,
    published_rows,
    wait_for,
)
from tests.scenario import run_full_scenario

SHARDS = 8


def relay_for(engine: Engine, bootstrap: str, **config: object) -> Relay:
    def publisher() -> Publisher:
        return KafkaPublisher(bootstrap, client_id="test-relay")

    settings = {"shards": SHARDS, "lease_ttl_s": 5.0, "backoff_base_s": 0.2, **config}
    return Relay(engine, publisher, RelayConfig(**settings))  # type: ignore[arg-type]


def test_rows_are_published_once_with_headers_keys_and_recorded_offsets(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    topic = fresh_topic(kafka.bootstrap_servers)
    envs = envelopes(topic, keys=5, per_key=4)
    insert(engine, envs, shards=SHARDS)

    stats = relay_for(engine, kafka.bootstrap_servers).run(once=True)

    assert stats.published == len(envs)
    rows = published_rows(engine, topic)
    assert {r.status for r in rows} == {OutboxStatus.PUBLISHED}
    records = consume(kafka.bootstrap_servers, topic, len(envs))
    assert len(records) == len(envs)  # once each
    by_event = {r.headers["ce_id"]: r for r in records}
    for row, env in zip(rows, envs, strict=True):
        record = by_event[env.event_id]
        assert (record.partition, record.offset) == (row.kafka_partition, row.kafka_offset)
        assert record.key == env.key
        assert record.value == env.payload  # byte-exact
        assert record.headers["ce_specversion"] == "1.0"
        assert record.headers["ce_type"] == "test.happened"
        assert record.headers["ce_source"] == "/outbox-pipeline"
        assert record.headers["ce_time"].endswith("Z")
        assert record.headers["outbox_id"] == str(row.id)
        assert record.headers["correlation_id"] == env.headers["correlation_id"]
        assert record.headers["traceparent"] == "00-ab-cd-01"
    assert_in_version_order(records)
    # A second pass finds nothing left to send.
    assert relay_for(engine, kafka.bootstrap_servers).run(once=True).published == 0


def test_domain_commands_reach_their_routed_topics(engine: Engine, kafka: EmbeddedBroker) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    run_full_scenario(bus)
    with engine.connect() as conn:
        expected = conn.execute(
            select(outbox_table.c.topic, func.count()).group_by(outbox_table.c.topic)
        ).all()

    relay_for(engine, kafka.bootstrap_servers).run(once=True)

    with engine.connect() as conn:
        pending = conn.execute(
            select(func.count()).where(outbox_table.c.status != OutboxStatus.PUBLISHED)
        ).scalar_one()
        aggregate_versions = conn.execute(
            select(outbox_table.c.key, outbox_table.c.headers).order_by(outbox_table.c.id)
        ).all()
    assert pending == 0
    assert expected  # the scenario wrote to several topics
    last: dict[str, int] = {}
    for key, headers in aggregate_versions:
        version = int(json.loads(headers)["aggregate_version"])
        assert version == last.get(key, 0) + 1
        last[key] = version


def test_oversized_message_is_dead_at_once_and_the_others_go_on(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    topic = fresh_topic(kafka.bootstrap_servers)
    envs = envelopes(topic, keys=3, per_key=2)
    # agg-1's first event is 2 MB: over the producer's 1 MiB max_request_size.
    big = envs[1]
    envs[1] = replace(big, payload=json.dumps({"pad": "x" * 2_000_000}))
    insert(engine, envs, shards=SHARDS)

    with capture_logs() as logs:
        stats = relay_for(engine, kafka.bootstrap_servers).run(once=True)

    assert stats.dead == 1
    assert stats.published == len(envs) - 1
    rows = {r.event_id: r for r in published_rows(engine, topic)}
    dead = rows[big.event_id]
    assert dead.status == OutboxStatus.DEAD
    assert "MessageSizeTooLarge" in (dead.last_error or "")
    assert dead.attempts == 1
    records = consume(kafka.bootstrap_servers, topic, len(envs) - 1)
    assert {r.headers["ce_id"] for r in records} == set(rows) - {big.event_id}
    assert any(e["event"] == "outbox_message_dead" for e in logs)


def test_a_missing_topic_stops_the_relay_at_start_with_a_clear_error(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    relay = relay_for(engine, kafka.bootstrap_servers, topics=("no-such-topic-xyz",))
    with pytest.raises(TopicsMissing, match=r"no-such-topic-xyz.*outbox topics ensure"):
        relay.run(once=True)


def test_relay_started_before_the_broker_waits_then_publishes(postgres_db: Engine) -> None:
    port = free_port()
    broker = EmbeddedBroker(port)
    bootstrap = f"127.0.0.1:{port}"
    relay = relay_for(postgres_db, bootstrap, backoff_base_s=0.2, backoff_max_s=1.0)
    done = threading.Event()
    with capture_logs() as logs:
        worker = threading.Thread(target=lambda: (relay.run(), done.set()), daemon=True)
        worker.start()
        try:
            wait_for(lambda: any(e["event"] == "relay_broker_unreachable" for e in logs), 30)
            broker.start()
            topic = fresh_topic(bootstrap)
            envs = envelopes(topic, keys=4, per_key=3)
            insert(postgres_db, envs, shards=SHARDS)
            wait_for(lambda: _count(postgres_db, topic, OutboxStatus.PUBLISHED) == len(envs), 60)
        finally:
            relay.stop()
            worker.join(timeout=30)
            broker.stop()
    unreachable = [e for e in logs if e["event"] == "relay_broker_unreachable"]
    assert "no Kafka broker answered" in unreachable[0]["error"]
    assert unreachable[0]["retry_in_s"] > 0
    assert done.is_set()


def test_broker_outage_is_survived_without_loss_or_reordering(
    postgres_db: Engine, private_broker: EmbeddedBroker
) -> None:
    bootstrap = private_broker.bootstrap_servers
    topic = fresh_topic(bootstrap)
    envs = envelopes(topic, keys=20, per_key=30)
    relay = relay_for(postgres_db, bootstrap, batch_size=50)
    worker = threading.Thread(target=relay.run, daemon=True)
    worker.start()
    try:
        # Commands keep committing before, during and after a 10 s outage.
        insert(postgres_db, envs[:200], shards=SHARDS)
        wait_for(lambda: _count(postgres_db, topic, OutboxStatus.PUBLISHED) > 0, 30)
        private_broker.pause()
        insert(postgres_db, envs[200:400], shards=SHARDS)
        time.sleep(10)
        private_broker.resume()
        insert(postgres_db, envs[400:], shards=SHARDS)
        wait_for(lambda: _count(postgres_db, topic, OutboxStatus.PUBLISHED) == len(envs), 90)
    finally:
        relay.stop()
        worker.join(timeout=60)
    records = consume(bootstrap, topic, len(envs))
    assert {r.headers["ce_id"] for r in records} == {e.event_id for e in envs}
    assert_in_version_order(records)


def _count(engine: Engine, topic: str, status: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    outbox_table.c.topic == topic, outbox_table.c.status == status
                )
            ).scalar_one()
        )
