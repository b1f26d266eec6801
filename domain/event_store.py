"""The event store: append-only `domain_events`, read back per aggregate."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from domain.errors import EventSchemaError
from domain.events import EventRegistry, RecordedEvent
from domain.schema import domain_events

__all__ = ["event_row", "load_stream", "row_to_recorded"]

_STREAM = select(
    domain_events.c.event_id,
    domain_events.c.aggregate_type,
    domain_events.c.aggregate_id,
    domain_events.c.version,
    domain_events.c.type,
    domain_events.c.schema_version,
    domain_events.c.payload,
    domain_events.c.metadata,
    domain_events.c.occurred_at,
).order_by(domain_events.c.version)


def row_to_recorded(row: Any, registry: EventRegistry) -> RecordedEvent:
    try:
        payload = json.loads(row.payload)
    except json.JSONDecodeError as exc:
        raise EventSchemaError(
            f"stored event {row.event_id} has a payload that is not JSON"
        ) from exc
    return RecordedEvent(
        event_id=row.event_id,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        version=row.version,
        event=registry.load(row.type, row.schema_version, payload),
        occurred_at=row.occurred_at,
        metadata=json.loads(row.metadata),
        payload_json=row.payload,
    )


def load_stream(
    conn: Connection, aggregate_id: str, registry: EventRegistry
) -> list[RecordedEvent]:
    """Every event of one aggregate, oldest first, upcast to the current schema versions."""
    rows = conn.execute(_STREAM.where(domain_events.c.aggregate_id == aggregate_id)).all()
    return [row_to_recorded(row, registry) for row in rows]


def event_row(rec: RecordedEvent, metadata_json: str) -> dict[str, Any]:
    return {
        "aggregate_type": rec.aggregate_type,
        "aggregate_id": rec.aggregate_id,
        "version": rec.version,
        "event_id": rec.event_id,
        "type": rec.event.TYPE,
        "schema_version": rec.event.SCHEMA_VERSION,
        "payload": rec.payload_json,
        "metadata": metadata_json,
        "occurred_at": rec.occurred_at,
    }
