"""A Kafka record as the runtime sees it: headers decoded, the jobs it asks for, or why it
is poison (undecodable, unknown type, invalid schema, too large) and goes straight to failed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumers.dispatch import Headers
from consumers.groups import BoundGroup
from consumers.job import Job
from domain.errors import EventSchemaError, UnknownEventType
from domain.events import DomainEvent, EventRegistry

__all__ = ["Incoming", "Poison", "TopicPartition", "inbox_key", "read"]

TopicPartition = tuple[str, int]


class Poison(Exception):
    """A message no retry can fix by itself: recorded in failed_jobs and the DLQ at once."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class Incoming:
    record: Any  # kafka-python ConsumerRecord (topic, partition, offset, key, value, headers)
    headers: dict[str, str]
    event_id: str
    type: str
    attempt: int
    # The inbox key: the event id, or event_id/replay_id for a replay told to re-run effects.
    message_id: str
    jobs: list[Job] = field(default_factory=list)
    event: DomainEvent | None = None
    poison: Poison | None = None
    not_before: datetime | None = None

    @property
    def tp(self) -> TopicPartition:
        return (self.record.topic, self.record.partition)

    @property
    def offset(self) -> int:
        return int(self.record.offset)


def inbox_key(event_id: str, headers: dict[str, str]) -> str:
    """The event id; `event_id/replay_id` when a replay asked consumers to re-run effects."""
    replay = headers.get(Headers.REPLAY)
    if replay and headers.get(Headers.RERUN) == "true":
        return f"{event_id}/{replay}"
    return event_id


def _headers(record: Any) -> dict[str, str]:
    return {
        name: value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        for name, value in (record.headers or [])
    }


def read(
    record: Any, group: BoundGroup, events: EventRegistry, *, max_payload_bytes: int
) -> Incoming | None:
    """Classify a record; None when this group has no job for its (known) type."""
    headers = _headers(record)
    event_id = headers.get("ce_id", "")
    type_name = headers.get("ce_type", "")
    try:
        attempt = max(1, int(headers.get(Headers.ATTEMPT, "1")))
    except ValueError:
        attempt = 1
    incoming = Incoming(
        record, headers, event_id[:36], type_name[:255], attempt, inbox_key(event_id, headers)
    )
    incoming.poison = _choose_jobs(incoming, group, events)
    if incoming.poison is None and not incoming.jobs:
        return None  # a known event this group does not handle
    if incoming.poison is None:
        incoming.not_before = _time(headers.get(Headers.NOT_BEFORE))
        incoming.poison = _decode(incoming, events, max_payload_bytes)
    return incoming


def _choose_jobs(incoming: Incoming, group: BoundGroup, events: EventRegistry) -> Poison | None:
    named = incoming.headers.get(Headers.JOB)
    if named:
        declared = group.job(named)
        if declared is None:
            return Poison("unknown_job", f"no job named {named!r} in group {group.name!r}")
        incoming.jobs = [declared]
    else:
        incoming.jobs = group.for_type(incoming.type)
    event_id = incoming.headers.get("ce_id", "")
    if not event_id or not incoming.type:
        return Poison(
            "undecodable", "no ce_id/ce_type header: not a CloudEvents record from the relay"
        )
    if len(event_id) > 36 or len(incoming.headers.get("ce_type", "")) > 255:
        incoming.message_id = incoming.event_id
        return Poison("undecodable", "ce_id over 36 or ce_type over 255 characters")
    if not incoming.jobs:
        try:
            events.class_for(incoming.type)
        except UnknownEventType as exc:
            return Poison("unknown_type", str(exc))
    return None


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


def _decode(incoming: Incoming, events: EventRegistry, max_payload_bytes: int) -> Poison | None:
    value = incoming.record.value or b""
    if len(value) > max_payload_bytes:
        return Poison(
            "too_large", f"payload of {len(value)} bytes is over the {max_payload_bytes}-byte limit"
        )
    try:
        payload = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        return Poison("undecodable", f"payload is not JSON: {exc}")
    if not isinstance(payload, dict):
        return Poison("invalid_schema", "payload is not a JSON object")
    try:
        version = int(incoming.headers.get(Headers.SCHEMA_VERSION, "1"))
        incoming.event = events.load(incoming.type, version, payload)
    except UnknownEventType as exc:
        return Poison("unknown_type", str(exc))
    except (EventSchemaError, ValueError) as exc:
        return Poison("invalid_schema", str(exc))
    return None
