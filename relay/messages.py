"""Outbox row -> Kafka record, in CloudEvents binary content mode.

The payload is the record value byte for byte. The event's attributes travel as headers:
`ce_specversion`, `ce_id` (the event id, so consumers de-duplicate), `ce_type`,
`ce_source`, `ce_time` and `content-type`, then `outbox_id` and the row's own headers
(correlation and causation ids, `traceparent`, tenant, aggregate version...).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from relay.publisher import Message

__all__ = ["UnsendableRow", "to_message"]


class UnsendableRow(ValueError):
    """The row can never become a Kafka record (its reason is stored on the dead row)."""


def _time(value: datetime) -> bytes:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z").encode()


def to_message(row: Any, source: bytes) -> Message:
    try:
        value = row.payload.encode("utf-8")
        key = row.key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsendableRow(f"payload or key is not valid UTF-8 text: {exc}") from None
    try:
        extra = json.loads(row.headers) if row.headers else {}
    except ValueError as exc:
        raise UnsendableRow(f"headers are not valid JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise UnsendableRow("headers are not a JSON object")
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", row.event_id.encode()),
        ("ce_type", row.type.encode()),
        ("ce_source", source),
        ("ce_time", _time(row.created_at)),
        ("content-type", b"application/json"),
        ("outbox_id", str(row.id).encode()),
    ]
    headers += [(str(name), str(val).encode("utf-8")) for name, val in extra.items()]
    return Message(outbox_id=row.id, topic=row.topic, key=key, value=value, headers=headers)
