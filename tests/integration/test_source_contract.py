"""One contract for every implementation of the Source port: the in-memory broker the unit
tests use, and kafka-python against a real broker (the embedded one, or
OUTBOX_TEST_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from kafka import KafkaProducer

from consumers.kafka_source import KafkaSource
from consumers.memory import MemoryBroker, MemorySource
from consumers.offsets import moved_at_of
from consumers.source import Record, Source, TopicPartition
from pipeline.broker import EmbeddedBroker
from tests.kafka_helpers import fresh_topic, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Heard:
    """A rebalance listener that remembers what it heard."""

    assigned: set[TopicPartition] = field(default_factory=set)
    revoked: list[set[TopicPartition]] = field(default_factory=list)

    def revoked_(self, partitions: set[TopicPartition]) -> None:
        self.revoked.append(partitions)

    def assigned_(self, partitions: set[TopicPartition]) -> None:
        self.assigned = partitions


class _Listener:
    def __init__(self, heard: Heard) -> None:
        self.heard = heard

    def revoked(self, partitions: set[TopicPartition]) -> None:
        self.heard.revoked_(partitions)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.heard.assigned_(partitions)


@dataclass
class Kit:
    topic: str
    produce: Callable[[int, int], None]  # (partition, count)
    source: Callable[[str], Source]  # a new member of the group


@pytest.fixture(params=["in-memory", "kafka-python"])
def kit(request: pytest.FixtureRequest) -> Iterator[Kit]:
    made: list[Source] = []
    if request.param == "in-memory":
        broker = MemoryBroker({"contract": 3})

        def produce_memory(partition: int, count: int) -> None:
            for n in range(count):
                broker.produce("contract", key=b"k", value=str(n).encode(), partition=partition)

        def memory_source(group: str) -> Source:
            made.append(MemorySource(broker, group))
            return made[-1]

        yield Kit("contract", produce_memory, memory_source)
    else:
        kafka: EmbeddedBroker = request.getfixturevalue("kafka")
        bootstrap = kafka.bootstrap_servers
        topic = fresh_topic(bootstrap, partitions=3)
        producer = KafkaProducer(bootstrap_servers=bootstrap)

        def produce_kafka(partition: int, count: int) -> None:
            for n in range(count):
                producer.send(topic, key=b"k", value=str(n).encode(), partition=partition)
            producer.flush()

        def kafka_source(group: str) -> Source:
            made.append(
                KafkaSource(
                    bootstrap,
                    group,
                    client_id="contract",
                    session_timeout_ms=6000,
                    heartbeat_interval_ms=1000,
                    max_poll_interval_ms=6000,
                    max_poll_records=100,
                )
            )
            return made[-1]

        yield Kit(topic, produce_kafka, kafka_source)
        producer.close()
    for source in made:
        source.close()


def joined(kit: Kit, group: str) -> tuple[Source, Heard, list[Record]]:
    """A member that has its assignment, and what its polls returned meanwhile."""
    heard = Heard()
    source = kit.source(group)
    source.subscribe([kit.topic], _Listener(heard))
    got: list[Record] = []
    wait_for(lambda: got.extend(source.poll(100, 100)) or len(heard.assigned) > 0, 60)
    return source, heard, got


def drain(
    source: Source, expected: int, got: list[Record] | None = None, timeout_s: float = 20
) -> list[Record]:
    got = list(got or [])
    wait_for(lambda: len(got) >= expected or got.extend(source.poll(100, 100)), timeout_s)
    return got


def test_a_lone_member_is_assigned_every_partition_and_reads_each_in_order(kit: Kit) -> None:
    group = f"c-{uuid.uuid4().hex[:8]}"
    kit.produce(0, 5)
    kit.produce(2, 3)
    source = kit.source(group)
    heard = Heard()
    source.subscribe([kit.topic], _Listener(heard))
    records = drain(source, 8)
    assert heard.assigned == {(kit.topic, p) for p in range(3)} == source.assignment()
    assert source.rebalancing() is False  # the join completed
    for partition, count in ((0, 5), (2, 3)):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(count))
    assert sorted(int(r.value or b"") for r in records if r.partition == 0) == list(range(5))
    assert source.lag().get((kit.topic, 0)) == 0


def test_a_paused_partition_returns_nothing_and_after_resume_everything_once(kit: Kit) -> None:
    source, _, _ = joined(kit, f"c-{uuid.uuid4().hex[:8]}")
    tp = (kit.topic, 1)
    source.pause({tp})
    assert source.paused() == {tp}
    kit.produce(1, 4)
    kit.produce(0, 2)
    first = drain(source, 2)
    assert all(r.partition == 0 for r in first)
    source.resume({tp})
    assert source.paused() == set()
    after = drain(source, 4)
    assert sorted(r.offset for r in after if r.partition == 1) == [0, 1, 2, 3]


def test_a_new_member_starts_where_the_last_commit_left_and_reads_its_metadata(
    kit: Kit,
) -> None:
    group = f"c-{uuid.uuid4().hex[:8]}"
    kit.produce(0, 6)
    source, _, got = joined(kit, group)
    drain(source, 6, got)
    metadata = '{"moved_at": 1234.5}'
    assert source.commit({(kit.topic, 0): (4, metadata)})
    source.close()
    again, _, got = joined(kit, group)
    rest = drain(again, 2, got)
    assert [r.offset for r in rest if r.partition == 0] == [4, 5]
    state = again.group_state()
    assert state is not None and state.members == 1 and state.partitions == 3
    assert moved_at_of(metadata) == 1234.5


def test_an_asynchronous_commit_is_answered_through_its_callback(kit: Kit) -> None:
    source, _, _ = joined(kit, f"c-{uuid.uuid4().hex[:8]}")
    kit.produce(2, 1)
    drain(source, 1)
    answers: list[tuple[dict[TopicPartition, int], Exception | None]] = []
    source.commit_async({(kit.topic, 2): (1, "{}")}, lambda o, e: answers.append((dict(o), e)))
    wait_for(lambda: source.poll(50, 10) == [] and answers, what="commit answered")
    assert answers == [({(kit.topic, 2): 1}, None)]


def test_a_second_member_takes_partitions_over_and_the_first_hears_it(kit: Kit) -> None:
    group = f"c-{uuid.uuid4().hex[:8]}"
    first, heard_first, _ = joined(kit, group)
    second = kit.source(group)
    heard_second = Heard()
    second.subscribe([kit.topic], _Listener(heard_second))
    done = threading.Event()

    def keep_polling(source: Source) -> None:  # each member polls on its own, as workers do
        while not done.is_set():
            source.poll(50, 10)

    threads = [threading.Thread(target=keep_polling, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    try:
        wait_for(
            lambda: bool(heard_second.assigned) and len(first.assignment()) < 3,
            timeout_s=40,
            what="partitions split between two members",
        )
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert first.assignment() | second.assignment() == {(kit.topic, p) for p in range(3)}
    assert not first.assignment() & second.assignment()
    assert heard_first.revoked
