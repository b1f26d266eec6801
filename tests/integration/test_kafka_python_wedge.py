"""kafka-python 3.0.12's wedge after an outage longer than the delivery timeout (ADR 012),
and the relay's workaround, on a bare producer with the relay's settings (timeouts shrunk
so that the outage is short)."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer
from kafka.producer.transaction_manager import TransactionState

from infra.broker import EmbeddedBroker
from relay.errors import PublisherBroken
from relay.kafka import PRODUCER_SETTINGS, KafkaPublisher, ensure_idempotence_recovers
from relay.publisher import Delivered, Failed, Message
from tests.kafka_helpers import fresh_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHORT = {"delivery_timeout_ms": 4_000, "request_timeout_ms": 2_000, "linger_ms": 5}


def test_a_bare_producer_wedged_by_an_expired_batch_recovers_with_the_workaround(
    private_broker: EmbeddedBroker,
) -> None:
    topic = fresh_topic(private_broker.bootstrap_servers, partitions=1)
    producer = KafkaProducer(
        bootstrap_servers=[private_broker.bootstrap_servers], **{**PRODUCER_SETTINGS, **SHORT}
    )
    try:
        producer.send(topic, b"before").get(timeout=10)
        private_broker.pause()
        try:
            expired = producer.send(topic, b"during")
            wait_for(lambda: expired.is_done, 20, "the batch sent before the outage expires")
            assert expired.failed()
            # The bug: no producer id, yet READY, from which init_producer_id() does nothing.
            manager = producer._transaction_manager
            assert manager is not None
            wait_for(lambda: not manager.has_producer_id(), 5, "the producer id is dropped")
            assert manager._current_state == TransactionState.READY
            time.sleep(1)  # the sender keeps returning early: nothing re-initialises it
            assert not manager.has_producer_id()
            assert manager._current_state == TransactionState.READY

            assert ensure_idempotence_recovers(producer)
            assert not ensure_idempotence_recovers(producer)  # once is enough
        finally:
            private_broker.resume()
        producer.send(topic, b"after").get(timeout=10)  # acked: a new producer id
        assert manager.has_producer_id()
    finally:
        producer.close(timeout=5)


def test_the_publisher_resumes_by_itself_and_closes_within_its_timeout_during_an_outage(
    private_broker: EmbeddedBroker,
) -> None:
    """KafkaPublisher applies the workaround at every flush; its close() is bounded also
    while the broker answers nothing (kafka-python's own close raises then)."""
    topic = fresh_topic(private_broker.bootstrap_servers, partitions=1)
    publisher = KafkaPublisher(private_broker.bootstrap_servers, client_id="wedge", **SHORT)
    message = Message(1, topic, b"k", b"{}", [("ce_id", b"1")])

    def flushed(timeout_s: float) -> list[object]:
        batch = publisher.send_batch([message])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            outcomes = publisher.flush(batch, timeout_s=1.0)
            if outcomes is not None:
                return list(outcomes)
        raise AssertionError(f"no outcome within {timeout_s} s")

    assert isinstance(flushed(10)[0], Delivered)
    private_broker.pause()
    try:
        assert not isinstance(flushed(20)[0], Delivered)  # expired: the wedge's trigger
    finally:
        private_broker.resume()
    # The producer re-initialises its id by itself. Its InitProducerId may go out on a
    # connection the pause left stale and time out: kafka-python then marks the producer
    # fatally broken, and the next use says so (PublisherBroken), so the relay replaces it
    # (relay/sending.py); a wedged producer, without the workaround, would say nothing and
    # never deliver. Either way a message is delivered within seconds.
    deadline = time.monotonic() + 20
    delivered = False
    while not delivered and time.monotonic() < deadline:
        try:
            delivered = isinstance(flushed(5)[0], Delivered)
        except PublisherBroken:
            publisher.close(timeout_s=1.0)
            publisher = KafkaPublisher(private_broker.bootstrap_servers, client_id="wedge", **SHORT)
    assert delivered

    private_broker.pause()
    try:
        publisher.send_batch([message])
        started = time.monotonic()
        publisher.close(timeout_s=1.0)  # returns, does not raise
        closed_in = time.monotonic() - started
    finally:
        private_broker.resume()
    assert closed_in < 10


def test_a_send_that_blocks_fails_the_rest_of_the_batch_unsent(
    private_broker: EmbeddedBroker,
) -> None:
    """kafka-python's send() blocks max_block_ms for a topic it has no metadata for: during
    an outage one such wait fails the batch's remaining messages, instead of one wait each."""
    publisher = KafkaPublisher(
        private_broker.bootstrap_servers, client_id="blocked", max_block_ms=1_000, **SHORT
    )
    # Created after the producer's metadata was fetched: listed, unknown to the producer.
    topic = fresh_topic(private_broker.bootstrap_servers, partitions=1)
    assert publisher.partitions(topic) == 1
    messages = [Message(i, topic, b"k", b"{}", [("ce_id", str(i).encode())]) for i in range(5)]
    private_broker.pause()
    try:
        batch = publisher.send_batch(messages)
        outcomes = publisher.flush(batch, timeout_s=1.0)
    finally:
        private_broker.resume()
        publisher.close(timeout_s=1.0)
    assert outcomes is not None
    assert all(isinstance(o, Failed) and not o.permanent for o in outcomes)
    assert "KafkaTimeoutError" in outcomes[0].reason  # type: ignore[union-attr]
    assert all(o.reason.startswith("not sent: the producer blocked") for o in outcomes[1:])  # type: ignore[union-attr]
