"""The message envelope: what the write path hands to the outbox, opaque to the relay."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CE_TIME_HEADER",
    "COPIED_AT_HEADER",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "RECORD_OVERHEAD_BYTES",
    "Envelope",
    "canonical_json",
    "record_size",
    "rfc3339",
    "shard_for",
]

# CloudEvents `time` is when the occurrence happened. The relay sends a row's created_at
# as ce_time, unless the row's headers carry `ce_time` themselves: a copy (replay, retry,
# DLQ) keeps its original's time there, and says when it was made in `x-copied-at`.
CE_TIME_HEADER = "ce_time"
COPIED_AT_HEADER = "x-copied-at"

# Kafka's default largest record (the producer's max_request_size, the broker's
# message.max.bytes); KAFKA_MAX_MESSAGE_BYTES sets both ends in this project.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
# What the relay adds to a row when it sends it: the CloudEvents headers (ce_specversion,
# ce_id, ce_type, ce_source, ce_time, content-type, outbox_id) and the record batch's own
# framing; generous, so that a row that fits by this count always fits at the broker.
RECORD_OVERHEAD_BYTES = 1024


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON: the same data always gives the same bytes."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)


def rfc3339(moment: datetime) -> str:
    """A time as CloudEvents writes it: RFC 3339 in UTC with microseconds and `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def shard_for(key: str, shards: int) -> int:
    """Stable shard of a key (CRC-32, identical in every process and on every machine).

    Changing the shard count re-maps keys: drain the outbox before changing it.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return zlib.crc32(key.encode("utf-8")) % shards


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message to publish: the outbox stores it, the relay sends it unchanged.

    `headers` carries correlation/causation ids, trace context and tenant; the relay
    adds the CloudEvents `ce_*` headers from these fields when it sends. A copy of an
    earlier message (replay, retry, DLQ) puts the original's time in `headers["ce_time"]`
    (CE_TIME_HEADER), which the relay then sends instead of the row's creation time.
    """

    event_id: str
    topic: str
    key: str
    type: str
    payload: str
    occurred_at: datetime
    headers: dict[str, str] = field(default_factory=dict)
    available_at: datetime | None = None


def record_size(envelope: Envelope) -> int:
    """An upper bound of the Kafka record the relay will make of this envelope, in bytes."""
    size = RECORD_OVERHEAD_BYTES + len(envelope.key.encode()) + len(envelope.type.encode())
    size += sum(len(k.encode()) + len(v.encode()) for k, v in envelope.headers.items())
    return size + len(envelope.payload.encode())
