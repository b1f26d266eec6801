"""Outbox row -> Kafka record, in CloudEvents binary content mode.

The payload is the record value byte for byte. The event's attributes travel as headers:
`ce_specversion`, `ce_id` (the event id, so consumers de-duplicate), `ce_type`,
`ce_source`, `ce_time` (the row's creation, or for a copy its original's time kept in
the row's `ce_time` header) and `content-type`, then `outbox_id` and the row's own headers
(correlation and causation ids, `traceparent`, tenant, aggregate version, and a copy's
`x-copied-at`...).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from outbox.envelope import CE_TIME_HEADER, rfc3339
from relay.publisher import Message

__all__ = ["UnsendableRow", "to_message"]


class UnsendableRow(ValueError):
    """The row can never become a Kafka record (its reason is stored on the dead row)."""


@lru_cache(maxsize=1024)
def _time(value: datetime) -> bytes:
    """RFC 3339 in UTC; cached because the rows of one command share their time."""
    return rfc3339(value).encode()


def to_message(row: Any, source: bytes) -> Message:
    """The Kafka record of a claimed row (the relay's hot path: ~1 us per header counts)."""
    outbox_id, event_id, topic, key, _shard, type_, payload, headers_json, created_at = row[:9]
    try:
        value = payload.encode()
        key_bytes = key.encode()
        extra = _loads(headers_json) if headers_json else {}
    except UnicodeEncodeError as exc:
        raise UnsendableRow(f"payload or key is not valid UTF-8 text: {exc}") from None
    except ValueError as exc:
        raise UnsendableRow(f"headers are not valid JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise UnsendableRow("headers are not a JSON object")
    # A copy (replay, retry, DLQ) keeps its original's time (outbox.envelope.CE_TIME_HEADER).
    original = extra.pop(CE_TIME_HEADER, None)
    headers = [
        _SPECVERSION,
        ("ce_id", event_id.encode()),
        ("ce_type", type_.encode()),
        ("ce_source", source),
        ("ce_time", _time(created_at) if original is None else str(original).encode()),
        _CONTENT_TYPE,
        ("outbox_id", str(outbox_id).encode()),
    ]
    headers += [(name, str(val).encode()) for name, val in extra.items()]
    return Message(outbox_id, topic, key_bytes, value, headers)


_SPECVERSION = ("ce_specversion", b"1.0")
_CONTENT_TYPE = ("content-type", b"application/json")
_loads = json.loads
