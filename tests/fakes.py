"""A working in-memory publisher (the Publisher port), scriptable for failure tests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.kafka import partition_for
from relay.publisher import Delivered, Failed, Message, Outcome


@dataclass
class _Batch:
    outcomes: list[Outcome]

    def __len__(self) -> int:
        return len(self.outcomes)


@dataclass
class InMemoryPublisher:
    """Appends to per-partition logs like a broker. `down`: every send fails (retriable);
    `failing_keys`: those keys fail (retriable); `rejected_keys`: refused for good;
    `in_flight_flushes`: that many flushes report "still in flight" first; `stalled`: every
    flush waits (up to 50 ms of its timeout) and reports "still in flight", like a wedged
    client; a record over `max_bytes` is refused for good, like kafka-python's
    max_request_size."""

    topics: dict[str, int] = field(default_factory=dict)
    down: bool = False
    failing_keys: set[bytes] = field(default_factory=set)
    rejected_keys: set[bytes] = field(default_factory=set)
    in_flight_flushes: int = 0
    stalled: bool = False
    max_bytes: int = 1_048_576
    logs: dict[tuple[str, int], list[Message]] = field(default_factory=dict)
    closed: bool = False
    flushes: int = 0

    def partitions(self, topic: str) -> int | None:
        return self.topics.get(topic)

    def send_batch(self, messages: Sequence[Message]) -> _Batch:
        outcomes: list[Outcome] = []
        for msg in messages:
            count = self.topics.get(msg.topic)
            if count is None:
                outcomes.append(Failed(f"topic {msg.topic!r} does not exist", permanent=False))
            elif self.down:
                outcomes.append(Failed("KafkaTimeoutError: broker down", permanent=False))
            elif msg.key in self.rejected_keys or len(msg.value) > self.max_bytes:
                outcomes.append(Failed("MessageSizeTooLargeError: too big", permanent=True))
            elif msg.key in self.failing_keys:
                outcomes.append(Failed("NotLeaderForPartitionError", permanent=False))
            else:
                log = self.logs.setdefault((msg.topic, partition_for(msg.key, count)), [])
                log.append(msg)
                outcomes.append(Delivered(partition_for(msg.key, count), len(log) - 1))
        return _Batch(outcomes)

    def flush(self, batch: _Batch, timeout_s: float) -> list[Outcome] | None:
        self.flushes += 1
        if self.stalled:
            time.sleep(min(timeout_s, 0.05))
            return None
        if self.in_flight_flushes > 0:
            self.in_flight_flushes -= 1
            return None
        return batch.outcomes

    def close(self, timeout_s: float = 5.0) -> None:
        self.closed = True

    def messages(self, topic: str) -> list[Message]:
        return [m for (t, _), log in sorted(self.logs.items()) if t == topic for m in log]
