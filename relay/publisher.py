"""The publisher port: what the relay loop needs from a Kafka client, and nothing more.

`send_batch` hands messages to the client without waiting; `flush` waits for the broker's
answers and returns one outcome per message, in order; `close` lets go of the connections.
A second client (confluent-kafka, say) is one more class with these methods; the relay
loop does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Delivered", "Failed", "Message", "Outcome", "PendingBatch", "Publisher"]


@dataclass(frozen=True, slots=True)
class Message:
    outbox_id: int
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Delivered:
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Failed:
    """`permanent`: sending it again can never work (too large, bad topic name): dead.
    Otherwise (broker down, timeout) the row stays pending and is sent again later."""

    reason: str
    permanent: bool


Outcome = Delivered | Failed


class PendingBatch(Protocol):
    """What `send_batch` returns; only the publisher that made it can flush it."""

    def __len__(self) -> int: ...


class Publisher(Protocol):
    def partitions(self, topic: str) -> int | None:
        """Partition count of an existing topic, None when it does not exist."""

    def send_batch(self, messages: Sequence[Message]) -> PendingBatch:
        """Queue the messages for sending, in order; returns without waiting for acks."""

    def flush(self, batch: PendingBatch, timeout_s: float) -> list[Outcome] | None:
        """Wait up to `timeout_s` for the batch; one outcome per message in send order,
        or None when some are still in flight (call again: they are not sent twice)."""

    def close(self, timeout_s: float = 5.0) -> None: ...
