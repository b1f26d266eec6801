"""The confluent-kafka source's group membership on a real broker: the protocol it picks
(and its fallback), static membership of a supervised slot, and what `outbox consumers
status` says of both (ADR 019)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from structlog.testing import capture_logs

from consumers.confluent_source import ConfluentSource
from consumers.group_protocol import CLASSIC, CONSUMER, instance_id
from consumers.kafka_source import KafkaSource
from consumers.source import TopicPartition
from infra.broker import EmbeddedBroker
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK
from tests.conftest import EXTERNAL_KAFKA
from tests.kafka_helpers import fresh_topic, wait_for

pytestmark = pytest.mark.integration

pytest.importorskip("confluent_kafka")


@dataclass
class Heard:
    now: set[TopicPartition] = field(default_factory=set)
    revocations: list[set[TopicPartition]] = field(default_factory=list)

    def revoked(self, partitions: set[TopicPartition]) -> None:
        self.revocations.append(partitions)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.now = partitions


# What every member of these tests is made with (Tansu joins fast with a short session).
TIMEOUTS: dict[str, Any] = {
    "client_id": "membership",
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 6000,
    "max_poll_records": 100,
}


def _source(bootstrap: str, group: str, **options: str) -> ConfluentSource:
    return ConfluentSource(bootstrap, group, **TIMEOUTS, **options)


@contextmanager
def polling(*sources: ConfluentSource) -> Iterator[None]:
    """Each member polls on its own thread, as workers do."""
    done = threading.Event()

    def keep_polling(source: ConfluentSource) -> None:
        while not done.is_set():
            source.poll(50, 10)

    threads = [threading.Thread(target=keep_polling, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join()


def test_on_a_broker_without_kip_848_the_source_uses_cooperative_sticky_and_says_so(
    kafka: EmbeddedBroker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = kafka.bootstrap_servers
    topic = fresh_topic(bootstrap, partitions=3)
    group = f"m-{uuid.uuid4().hex[:8]}"
    slot = instance_id(group, 0, host="test-host")
    with capture_logs() as logs:
        source = _source(bootstrap, group, instance_id=slot)
    heard = Heard()
    try:
        source.subscribe([topic], heard)
        with polling(source):
            wait_for(lambda: len(heard.now) == 3, 60, what="assigned")
        assert source.protocol == CLASSIC  # the embedded broker lists no API 68
        [line] = [e for e in logs if e["event"] == "consumer_group_protocol"]
        assert line["protocol"] == "classic (cooperative-sticky)" and line["static_member"]
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        capsys.readouterr()
        assert main(["consumers", "status", "--group", group, "--json"]) == EXIT_OK
        [view] = json.loads(capsys.readouterr().out)
    finally:
        source.close()
    assert view["members"] == 1
    if EXTERNAL_KAFKA:
        assert view["protocol"] == "classic (cooperative-sticky)"
        assert view["static_members"] == [slot]
    else:  # Tansu reports neither the assignor nor the instance ids (docs/measured.md)
        assert view["protocol"] == "classic (assignor not reported by the broker)"


def test_a_broker_refusing_kip_848_makes_the_source_start_again_on_the_classic_protocol(
    kafka: EmbeddedBroker,
) -> None:
    """Asked for KIP-848 (as where ApiVersions list it), the source falls back when the
    broker answers the heartbeat with UNSUPPORTED_VERSION (Kafka 3.7-3.9 without the
    protocol enabled): the error reaches it through librdkafka's error callback."""
    bootstrap = kafka.bootstrap_servers
    topic = fresh_topic(bootstrap, partitions=2)
    group = f"m-{uuid.uuid4().hex[:8]}"  # a static member: librdkafka takes both settings
    source = _source(bootstrap, group, protocol=CONSUMER, instance_id=instance_id(group, 0))
    heard = Heard()

    class Refused:
        def name(self) -> str:
            return "UNSUPPORTED_VERSION"

        def __str__(self) -> str:
            return "the broker does not support ConsumerGroupHeartbeat"

    try:
        assert source.protocol == CONSUMER
        source.subscribe([topic], heard)
        source._on_error(Refused())
        with capture_logs() as logs, polling(source):
            wait_for(lambda: len(heard.now) == 2, 60, what="assigned on the classic protocol")
    finally:
        source.close()
    assert source.protocol == CLASSIC
    assert any(e["event"] == "consumer_group_protocol_fallback" for e in logs)


def test_a_static_member_replaced_takes_its_partitions_back_without_moving_the_others(
    kafka: EmbeddedBroker,
) -> None:
    """Static membership: the supervisor's replacement of a worker slot (same
    group.instance.id, within the session timeout) gets that slot's partitions back, and
    (on a broker that implements KIP-345, Apache Kafka) the other member is not rebalanced:
    it hears no revocation. The embedded broker (Tansu) moves the other member's
    partitions and gives them back: checked only against OUTBOX_TEST_KAFKA_BOOTSTRAP."""
    bootstrap = kafka.bootstrap_servers
    topic = fresh_topic(bootstrap, partitions=4)
    group = f"m-{uuid.uuid4().hex[:8]}"
    ids = [instance_id(group, slot, host="test-host") for slot in (0, 1)]
    first, second = (_source(bootstrap, group, instance_id=i) for i in ids)
    heard_first, heard_second = Heard(), Heard()
    replacement = None
    try:
        first.subscribe([topic], heard_first)
        second.subscribe([topic], heard_second)
        with polling(first, second):
            wait_for(
                lambda: len(heard_first.now) == len(heard_second.now) == 2,
                90,
                what="four partitions split between two static members",
            )
        held = set(first.assignment())
        settled = len(heard_second.revocations)
        first.close()  # a static member does not leave: its slot waits for its next worker
        replacement = _source(bootstrap, group, instance_id=ids[0])
        heard_replacement = Heard()
        replacement.subscribe([topic], heard_replacement)
        with polling(replacement, second):
            wait_for(lambda: bool(heard_replacement.now), 60, what="the replacement assigned")
    finally:
        for source in (second, replacement):
            if source is not None:
                source.close()
    assert heard_replacement.now == held
    if EXTERNAL_KAFKA:  # Tansu rebalances the others when a static member rejoins
        assert len(heard_second.revocations) == settled  # the other member kept reading


def test_a_group_whose_members_use_kafka_python_refuses_it_and_the_log_says_what_to_do(
    kafka: EmbeddedBroker,
) -> None:
    """The clients' assignors share no protocol: a confluent worker joining a group of
    kafka-python workers is refused (INCONSISTENT_GROUP_PROTOCOL) and says so once, with
    the way out, instead of a line per retry."""
    bootstrap = kafka.bootstrap_servers
    topic = fresh_topic(bootstrap, partitions=2)
    group = f"m-{uuid.uuid4().hex[:8]}"
    old = KafkaSource(bootstrap, group, **TIMEOUTS)
    heard_old, heard_new = Heard(), Heard()
    new = _source(bootstrap, group)
    try:
        old.subscribe([topic], heard_old)
        wait_for(lambda: old.poll(100, 10) == [] and len(heard_old.now) == 2, 60, what="joined")
        done = threading.Event()

        def keep_polling() -> None:
            while not done.is_set():
                old.poll(50, 10)

        thread = threading.Thread(target=keep_polling)
        thread.start()
        try:
            new.subscribe([topic], heard_new)
            with capture_logs() as logs:
                wait_for(
                    lambda: (
                        new.poll(100, 10) == []
                        and sum(e["event"] == "consumer_group_mixes_clients" for e in logs) > 0
                    ),
                    40,
                    what="the refusal said",
                )
                for _ in range(30):  # more refused joins: said once
                    new.poll(100, 10)
        finally:
            done.set()
            thread.join()
    finally:
        new.close()
        old.close()
    [said] = [e for e in logs if e["event"] == "consumer_group_mixes_clients"]
    assert "stop all its workers" in said["hint"]
    assert new.assignment() == set() and heard_old.now == {(topic, 0), (topic, 1)}


def test_a_subscribed_topic_that_does_not_exist_is_waited_for_never_created(
    kafka: EmbeddedBroker,
) -> None:
    """allow.auto.create.topics=false: the topic stays absent, the worker's log says once
    what to do, and the topic is read once `outbox topics ensure` created it."""
    bootstrap = kafka.bootstrap_servers
    topic = f"never-{uuid.uuid4().hex[:12]}"
    source = _source(bootstrap, f"m-{uuid.uuid4().hex[:8]}")
    heard = Heard()
    try:
        with capture_logs() as logs:
            source.subscribe([topic], heard)
            wait_for(
                lambda: (
                    source.poll(100, 10) == []
                    and any(e["event"] == "consumer_topics_without_metadata" for e in logs)
                ),
                30,
                what="the missing topic said",
            )
            for _ in range(20):
                source.poll(100, 10)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-membership")
        try:
            assert topic not in admin.list_topics()
            admin.create_topics([NewTopic(topic, 2, 1)])
        finally:
            admin.close()
        wait_for(lambda: source.poll(100, 10) == [] and len(heard.now) == 2, 60, what="read")
    finally:
        source.close()
    said = [e for e in logs if e["event"] == "consumer_topics_without_metadata"]
    assert len(said) == 1 and "outbox topics ensure" in said[0]["hint"]
