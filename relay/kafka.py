"""The publisher port on kafka-python.

Producer settings follow the guarantee (docs/measured.md):
- acks=all and idempotence (the broker de-duplicates the producer's own retries and keeps
  their order, with up to 5 requests in flight); `acks=1` would silently turn it off.
- The partition is computed here, once per key, with the same murmur2 as the Java and
  kafka-python default partitioners, so keys land where every other client expects: the
  default partitioner costs ~30% of `send()` in pure Python.
- A bounded delivery timeout: a broker that does not answer surfaces as retriable failures
  after `delivery_timeout_ms`, and the relay backs off instead of waiting forever.
- kafka-python 3.0.12 wedges for good after an outage longer than the delivery timeout
  (ADR 012): `ensure_idempotence_recovers` puts its transaction manager back where it
  re-initialises the producer id, before every flush.
- Every wait is bounded, `close` too (kafka-python's own close raises instead of closing
  when its flush times out).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import kafka.errors as kerr
import structlog
from kafka import KafkaAdminClient, KafkaProducer
from kafka.partitioner.default import murmur2
from kafka.producer.future import FutureRecordMetadata
from kafka.producer.transaction_manager import TransactionState

from relay.errors import BrokerUnavailable, PublisherBroken, PublisherClosed
from relay.publisher import Delivered, Failed, Message, Outcome

__all__ = ["PRODUCER_SETTINGS", "KafkaPublisher", "ensure_idempotence_recovers", "partition_for"]

log = structlog.get_logger(__name__)

PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "max_in_flight_requests_per_connection": 5,
    "linger_ms": 5,
    # +10-14% throughput over the 16 KiB default (docs/measured.md).
    "batch_size": 262_144,
    "request_timeout_ms": 15_000,
    "delivery_timeout_ms": 30_000,
    # send() blocks this long at most when the buffer is full or metadata is missing.
    "max_block_ms": 10_000,
    # Give up on an unreachable bootstrap list after 5 s (default 30 s): the relay logs it
    # and retries with back-off instead of sitting silent.
    "bootstrap_timeout_ms": 5_000,
    # Back off reconnects to at most 1 s (default 30 s), so that a returning broker is seen
    # within a second, not up to half a minute later.
    "reconnect_backoff_max_ms": 1_000,
}

# kafka-python raises these per message; sending the same bytes again cannot succeed.
_PERMANENT = (
    kerr.MessageSizeTooLargeError,
    kerr.RecordListTooLargeError,
    kerr.InvalidTopicError,
    kerr.InvalidRecordError,
    kerr.CorruptRecordError,
    kerr.UnsupportedForMessageFormatError,
)


def partition_for(key: bytes, partitions: int) -> int:
    """The default partitioner's choice for a keyed message (murmur2, positive, modulo)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class TopicCatalog:
    """Partition counts of the broker's topics, from a listing asked for at most every
    `ttl_s`: the start-up check of every routed topic, and a batch of rows for a topic that
    does not exist, each ask the broker once, not once per topic or row. A topic created
    meanwhile (`outbox topics ensure`) is seen within `ttl_s`."""

    def __init__(self, list_topics: Callable[[], dict[str, int]], ttl_s: float = 5.0) -> None:
        self._list = list_topics
        self._ttl = ttl_s
        self._counts: dict[str, int] = {}
        self._listed_at = -ttl_s
        self.listings = 0

    def partitions(self, topic: str) -> int | None:
        if topic not in self._counts and time.monotonic() - self._listed_at >= self._ttl:
            self.refresh()
        return self._counts.get(topic)

    def refresh(self) -> None:
        self._counts = self._list()
        self._listed_at = time.monotonic()
        self.listings += 1


def ensure_idempotence_recovers(producer: KafkaProducer) -> bool:
    """Un-wedge kafka-python's idempotent producer; True when it was wedged (ADR 012).

    kafka-python 3.0.12: when a batch already sent expires, the sender calls
    `reset_producer_id()`, which drops the producer id but leaves the state READY, while
    `init_producer_id()` only acts from UNINITIALIZED (and the transition back is refused).
    No InitProducerId is ever sent, the sender returns early on every pass (no producer
    id), so later batches neither go out nor expire: `flush()` never returns. READY without
    a producer id is that state and no other; UNINITIALIZED lets the sender re-initialise.
    """
    manager: Any = getattr(producer, "_transaction_manager", None)
    if manager is None or manager.is_transactional():
        return False
    with manager._lock:  # the bug lives behind this lock
        if manager._current_state != TransactionState.READY or manager.has_producer_id():
            return False
        manager._current_state = TransactionState.UNINITIALIZED
    sender: Any = getattr(producer, "_sender", None)
    if sender is not None:
        sender.wakeup()
    log.warning(
        "relay_producer_id_reset",
        note="kafka-python lost its producer id after a batch expired; re-initialising it",
    )
    return True


def _force_close(producer: KafkaProducer, timeout_s: float) -> None:
    """Close without waiting for the broker: kafka-python's `close(timeout)` flushes first
    and raises KafkaTimeoutError when that times out, before it would force-close. Force the
    sender to stop (it fails the incomplete batches), then close what is left."""
    sender: Any = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(timeout_s)
    with contextlib.suppress(kerr.KafkaError):
        producer.close(timeout=0)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


class _Pending:
    __slots__ = ("outcomes",)

    def __init__(self) -> None:
        # A future per message sent; a ready outcome for one refused at send().
        self.outcomes: list[FutureRecordMetadata | Outcome] = []

    def __len__(self) -> int:
        return len(self.outcomes)


class KafkaPublisher:
    def __init__(self, bootstrap_servers: str, *, client_id: str, **overrides: Any) -> None:
        self._bootstrap = bootstrap_servers.split(",")
        settings = {**PRODUCER_SETTINGS, **overrides}
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self._bootstrap, client_id=client_id, **settings
            )
            # Never create a topic (consumers/kafka_clients.py: kafka-python 3.0.12 does not
            # pass allow_auto_create_topics on), not even one deleted under a running relay.
            self._producer._metadata.config["allow_auto_create_topics"] = False
        except kerr.KafkaError as exc:  # 3.x: KafkaTimeoutError 'Unable to bootstrap'
            # The half-built client keeps its sockets and selector in reference cycles: two
            # per attempt, every ~7 s of an outage. Collect them now, not at some later GC.
            gc.collect()
            raise BrokerUnavailable(
                f"no Kafka broker answered at {bootstrap_servers} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
            ) from exc
        self.topics = TopicCatalog(self._list_topics)
        self._hashes: dict[bytes, int] = {}
        self._closed = False

    def _list_topics(self) -> dict[str, int]:
        """Every topic with its partition count, asked without creating any (a metadata
        request for one topic would auto-create it on brokers that allow that)."""
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                client_id="outbox-relay-admin",
                bootstrap_timeout_ms=PRODUCER_SETTINGS["bootstrap_timeout_ms"],
                request_timeout_ms=PRODUCER_SETTINGS["request_timeout_ms"],
            )
            try:
                return {d["name"]: len(d["partitions"]) for d in admin.describe_topics()}
            finally:
                admin.close()
        except kerr.KafkaError as exc:  # a broker that went away between two listings
            raise BrokerUnavailable(f"listing the topics failed: {exc}") from exc

    def partitions(self, topic: str) -> int | None:
        return self.topics.partitions(topic)

    def send_batch(self, messages: Sequence[Message]) -> _Pending:
        if self._closed:
            raise PublisherClosed("the publisher is closed")
        manager: Any = getattr(self._producer, "_transaction_manager", None)
        if manager is not None and manager.has_fatal_error():
            raise PublisherBroken(f"the producer hit a fatal error: {manager.last_error}")
        pending = _Pending()
        append = pending.outcomes.append
        send = self._producer.send
        hashes = self._hashes
        # After one send() blocked for max_block_ms (no metadata, buffer full) or a topic
        # listing found no broker, the rest would each block as long: they fail unsent.
        blocked: str | None = None
        for msg in messages:
            if blocked is not None:
                append(Failed(blocked, permanent=False))
                continue
            try:
                count = self.topics.partitions(msg.topic)
            except BrokerUnavailable as exc:
                blocked = str(exc)
                append(Failed(blocked, permanent=False))
                continue
            if count is None:
                append(Failed(f"topic {msg.topic!r} does not exist", permanent=False))
                continue
            hashed = hashes.get(msg.key)
            if hashed is None:
                if len(hashes) > 100_000:
                    hashes.clear()
                hashed = hashes[msg.key] = int(murmur2(msg.key)) & 0x7FFFFFFF
            try:
                append(
                    send(
                        msg.topic,
                        value=msg.value,
                        key=msg.key,
                        headers=msg.headers,
                        partition=hashed % count,
                    )
                )
            except _PERMANENT as exc:
                append(Failed(_reason(exc), permanent=True))
            except kerr.KafkaTimeoutError as exc:
                blocked = f"not sent: the producer blocked ({_reason(exc)})"
                append(Failed(_reason(exc), permanent=False))
            except kerr.KafkaError as exc:
                append(Failed(_reason(exc), permanent=False))
        return pending

    def flush(self, batch: Any, timeout_s: float) -> list[Outcome] | None:
        if self._closed:
            raise PublisherClosed("the publisher is closed")
        pending: _Pending = batch
        ensure_idempotence_recovers(self._producer)
        try:
            self._producer.flush(timeout=timeout_s)
        except kerr.KafkaTimeoutError:
            return None
        results: list[Outcome] = []
        for item in pending.outcomes:
            if not isinstance(item, FutureRecordMetadata):
                results.append(item)
            elif not item.is_done:
                return None
            elif item.succeeded():
                meta = item.value
                results.append(Delivered(meta.partition, meta.offset))
            else:
                exc = item.exception
                results.append(Failed(_reason(exc), permanent=isinstance(exc, _PERMANENT)))
        return results

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to `timeout_s` for what is in flight, then let go of it (bounded)."""
        if not self._closed:
            self._closed = True
            try:
                self._producer.close(timeout=timeout_s)
            except kerr.KafkaTimeoutError:
                _force_close(self._producer, timeout_s)
