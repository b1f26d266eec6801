"""The Kafka record the relay makes of an outbox row, and the outbox rows an attempt wrote:
what consumers.testing hands a job and shows a test."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumers.memory import MemoryRecord
from outbox.envelope import CE_TIME_HEADER, rfc3339

__all__ = ["CE_SOURCE", "Written", "record_of"]

CE_SOURCE = "/outbox-pipeline"  # the relay's default `ce_source` (RelayConfig.ce_source)


@dataclass(frozen=True)
class Written:
    """An outbox row an attempt wrote (a follow-up event, a dispatched job, a retry or DLQ
    copy)."""

    id: int
    topic: str
    key: str
    type: str
    payload: dict[str, Any]
    headers: dict[str, str]


def record_of(
    *,
    event_id: str,
    topic: str,
    key: str,
    type_: str,
    payload: str,
    headers: dict[str, str],
    created_at: datetime,
    outbox_id: int = 0,
    offset: int = 0,
    source: str = CE_SOURCE,
) -> MemoryRecord:
    """The Kafka record the relay makes of an outbox row (relay.messages.to_message, which
    the runtime may not import; tests/unit check that the two agree)."""
    extra = dict(headers)
    original = extra.pop(CE_TIME_HEADER, None)
    pairs: list[tuple[str, bytes | None]] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_type", type_.encode()),
        ("ce_source", source.encode()),
        ("ce_time", (rfc3339(created_at) if original is None else str(original)).encode()),
        ("content-type", b"application/json"),
        ("outbox_id", str(outbox_id).encode()),
    ]
    pairs += [(name, str(value).encode()) for name, value in extra.items()]
    return MemoryRecord(topic, 0, offset, key.encode(), payload.encode(), pairs)
