"""One contract for every implementation of the Publisher port: the working in-memory fake
the loop tests use, kafka-python and confluent-kafka against the embedded broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.broker import EmbeddedBroker, free_port
from relay import BrokerUnavailable, Delivered, Failed, KafkaPublisher, Message, Publisher
from relay.confluent import ConfluentPublisher
from relay.kafka import partition_for
from tests.fakes import InMemoryPublisher
from tests.kafka_helpers import consume, fresh_topic

pytestmark = pytest.mark.integration


@pytest.fixture(params=["in-memory", "kafka-python", "confluent"])
def port(request: pytest.FixtureRequest) -> Iterator[tuple[Publisher, str, str | None]]:
    """(publisher, a 3-partition topic, bootstrap servers to read back from, if any)."""
    if request.param == "in-memory":
        yield InMemoryPublisher(topics={"contract": 3}), "contract", None
        return
    kafka: EmbeddedBroker = request.getfixturevalue("kafka")
    topic = fresh_topic(kafka.bootstrap_servers, partitions=3)
    publisher: Publisher
    if request.param == "confluent":
        publisher = ConfluentPublisher(kafka.bootstrap_servers, client_id="contract")
    else:
        publisher = KafkaPublisher(kafka.bootstrap_servers, client_id="contract")
    yield publisher, topic, kafka.bootstrap_servers
    publisher.close()


def message(topic: str, n: int, key: str, size: int = 20) -> Message:
    return Message(n, topic, key.encode(), b"x" * size, [("ce_id", str(n).encode())])


def test_partitions_of_an_existing_and_a_missing_topic(
    port: tuple[Publisher, str, str | None],
) -> None:
    publisher, topic, _ = port
    assert publisher.partitions(topic) == 3
    assert publisher.partitions("no-such-topic-contract") is None


def test_a_batch_is_acknowledged_in_order_on_the_keys_murmur2_partition(
    port: tuple[Publisher, str, str | None],
) -> None:
    publisher, topic, bootstrap = port
    batch = [message(topic, n, f"k{n % 4}") for n in range(40)]

    outcomes = publisher.flush(publisher.send_batch(batch), timeout_s=30)

    assert outcomes is not None
    assert all(isinstance(o, Delivered) for o in outcomes)
    delivered = [o for o in outcomes if isinstance(o, Delivered)]
    for msg, outcome in zip(batch, delivered, strict=True):
        assert outcome.partition == partition_for(msg.key, 3)
    for partition in range(3):
        offsets = [o.offset for o in delivered if o.partition == partition]
        assert offsets == sorted(offsets)
        assert len(set(offsets)) == len(offsets)
    if bootstrap is not None:  # the broker stored what the outcomes say
        records = consume(bootstrap, topic, len(batch))
        where = {r.headers["ce_id"]: (r.partition, r.offset) for r in records}
        assert where == {
            str(m.outbox_id): (o.partition, o.offset) for m, o in zip(batch, delivered, strict=True)
        }


def test_an_oversized_record_fails_for_good_and_its_neighbours_are_delivered(
    port: tuple[Publisher, str, str | None],
) -> None:
    publisher, topic, _ = port
    batch = [
        message(topic, 1, "a"),
        message(topic, 2, "b", size=2_000_000),
        message(topic, 3, "c"),
    ]

    outcomes = publisher.flush(publisher.send_batch(batch), timeout_s=30)

    assert outcomes is not None
    assert isinstance(outcomes[0], Delivered)
    assert isinstance(outcomes[1], Failed)
    assert outcomes[1].permanent
    assert "MessageSizeTooLarge" in outcomes[1].reason
    assert isinstance(outcomes[2], Delivered)


def test_a_record_for_a_missing_topic_fails_retriably(
    port: tuple[Publisher, str, str | None],
) -> None:
    publisher, topic, _ = port
    batch = [message("no-such-topic-contract", 1, "a"), message(topic, 2, "b")]

    outcomes = publisher.flush(publisher.send_batch(batch), timeout_s=30)

    assert outcomes is not None
    assert isinstance(outcomes[0], Failed)
    assert not outcomes[0].permanent
    assert isinstance(outcomes[1], Delivered)


@pytest.mark.parametrize("client", [KafkaPublisher, ConfluentPublisher])
def test_a_batch_for_a_missing_topic_asks_the_broker_once(
    kafka: EmbeddedBroker, client: type[KafkaPublisher | ConfluentPublisher]
) -> None:
    publisher = client(kafka.bootstrap_servers, client_id="contract")
    try:
        batch = [message("no-such-topic-contract", n, f"k{n}") for n in range(50)]
        outcomes = publisher.flush(publisher.send_batch(batch), timeout_s=10)
    finally:
        publisher.close()
    assert outcomes is not None
    assert all(isinstance(o, Failed) and not o.permanent for o in outcomes)
    # One listing in all (confluent lists at start to find a dead broker early).
    assert publisher.topics.listings == 1


@pytest.mark.parametrize("client", [KafkaPublisher, ConfluentPublisher])
def test_no_broker_at_the_address_is_reported_as_unavailable(
    client: type[KafkaPublisher | ConfluentPublisher],
) -> None:
    with pytest.raises(BrokerUnavailable, match="no Kafka broker answered"):
        client(f"127.0.0.1:{free_port()}", client_id="contract")
