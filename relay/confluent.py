"""The publisher port on confluent-kafka (librdkafka), optional: `pip install '.[fast]'`
and `KAFKA_CLIENT=confluent`.

kafka-python spends ~20 us of Python per record; librdkafka encodes and sends in C, so the
relay's own database work becomes the limit. Same guarantees as `relay.kafka`: acks=all,
idempotence, a bounded delivery timeout, and the partition computed here with murmur2
(librdkafka's default partitioner hashes keys differently: without this, a key would land
on another partition than with kafka-python or Java clients).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from relay.errors import BrokerUnavailable, PublisherBroken, PublisherClosed
from relay.kafka import TopicCatalog, partition_for
from relay.publisher import Delivered, Failed, Message, Outcome

__all__ = ["ConfluentPublisher"]

_LIBRDKAFKA_LOG = logging.getLogger("relay.librdkafka")
_LIBRDKAFKA_LOG.setLevel(logging.ERROR)

PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "delivery.timeout.ms": 30_000,
    "request.timeout.ms": 15_000,
    # Never let a metadata request create a topic with the broker's default partitions.
    "allow.auto.create.topics": False,
    # The same per-record ceiling as kafka-python's max_request_size.
    "message.max.bytes": 1_048_576,
    # Reconnect at least every second (default up to 10 s): a broker back from an outage
    # is used at once.
    "reconnect.backoff.max.ms": 1_000,
}


class _Pending:
    __slots__ = ("outcomes", "waiting")

    def __init__(self, size: int) -> None:
        self.outcomes: list[Outcome | None] = [None] * size
        self.waiting = 0

    def __len__(self) -> int:
        return len(self.outcomes)


class ConfluentPublisher:
    def __init__(self, bootstrap_servers: str, *, client_id: str, **overrides: Any) -> None:
        try:
            from confluent_kafka import KafkaError, KafkaException, Producer
        except ImportError:
            raise BrokerUnavailable(
                "KAFKA_CLIENT=confluent needs the confluent-kafka package: pip install '.[fast]'"
            ) from None
        self._errors = (KafkaException, BufferError)
        self._size_codes = {KafkaError.MSG_SIZE_TOO_LARGE}
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                **PRODUCER_CONFIG,
                **overrides,
            },
            # librdkafka logs every reconnect attempt; the relay logs its own back-off.
            logger=_LIBRDKAFKA_LOG,
        )
        self.topics = TopicCatalog(self._list_topics)
        self._closed = False
        # A fatal delivery error's reason: librdkafka fails every later message at once
        # (seen: PRODUCER_FENCED after an outage, when the broker refused the epoch bump).
        self._fatal: str | None = None
        self._fatal_codes = {KafkaError._FATAL, KafkaError.PRODUCER_FENCED}
        # librdkafka connects lazily: ask for metadata now so a dead broker shows at start.
        try:
            self.topics.refresh()
        except BrokerUnavailable as exc:
            del self._producer  # stops librdkafka's threads from reconnecting forever
            raise BrokerUnavailable(
                f"no Kafka broker answered at {bootstrap_servers} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
            ) from exc

    def _list_topics(self) -> dict[str, int]:
        try:
            metadata = self._producer.list_topics(timeout=5)
        except self._errors as exc:
            raise BrokerUnavailable(f"listing the topics failed: {exc}") from exc
        return {name: len(t.partitions) for name, t in metadata.topics.items() if not t.error}

    def partitions(self, topic: str) -> int | None:
        return self.topics.partitions(topic)

    def send_batch(self, messages: Sequence[Message]) -> _Pending:
        if self._closed:
            raise PublisherClosed("the publisher is closed")
        if self._fatal is not None:
            raise PublisherBroken(f"the producer hit a fatal error: {self._fatal}")
        pending = _Pending(len(messages))
        produce = self._producer.produce
        for index, msg in enumerate(messages):
            count = self.topics.partitions(msg.topic)
            if count is None:
                pending.outcomes[index] = Failed(
                    f"topic {msg.topic!r} does not exist", permanent=False
                )
                continue
            callback = self._callback(pending, index)
            while True:
                try:
                    produce(
                        msg.topic,
                        value=msg.value,
                        key=msg.key,
                        partition=partition_for(msg.key, count),
                        headers=msg.headers,  # type: ignore[arg-type]  # list is invariant
                        on_delivery=callback,
                    )
                    pending.waiting += 1
                    break
                except BufferError:
                    self._producer.poll(0.05)  # the local queue is full: let it drain
                except self._errors as exc:
                    pending.outcomes[index] = self._failed(exc.args[0] if exc.args else exc)
                    break
        self._producer.poll(0)
        return pending

    def _callback(self, pending: _Pending, index: int) -> Any:
        def delivered(err: Any, record: Any) -> None:
            pending.waiting -= 1
            if err is None:
                pending.outcomes[index] = Delivered(record.partition(), record.offset())
            else:
                pending.outcomes[index] = self._failed(err)

        return delivered

    def _failed(self, err: Any) -> Failed:
        code = err.code() if hasattr(err, "code") else None
        reason = f"{err.name() if hasattr(err, 'name') else type(err).__name__}: {err}"
        if code in self._size_codes:
            return Failed(f"MessageSizeTooLargeError ({reason})"[:1000], permanent=True)
        if code in self._fatal_codes or (hasattr(err, "fatal") and err.fatal()):
            self._fatal = reason[:1000]
        return Failed(reason[:1000], permanent=False)

    def flush(self, batch: Any, timeout_s: float) -> list[Outcome] | None:
        if self._closed:
            raise PublisherClosed("the publisher is closed")
        pending: _Pending = batch
        self._producer.flush(timeout_s)
        if pending.waiting > 0:
            return None
        return [
            o if o is not None else Failed("no outcome", permanent=False) for o in pending.outcomes
        ]

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to `timeout_s` for what is in flight, then drop it (bounded)."""
        if not self._closed:
            self._closed = True
            if self._producer.flush(timeout_s) > 0:
                # Still unanswered: purge, so that destroying the client does not wait.
                self._producer.purge(in_queue=True, in_flight=True, blocking=False)
                self._producer.poll(0)
            del self._producer  # librdkafka has no close(): its threads end with the object
