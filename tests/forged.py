"""Forged records, produced straight to Kafka as anyone with the broker's address could: no
outbox row, no relay, only what the record itself claims."""

from __future__ import annotations

import uuid
from typing import Any

from kafka import KafkaProducer
from sqlalchemy import Engine, select

from domain.events import DomainEvent
from outbox import canonical_json
from outbox.schema import failed_jobs_table

__all__ = ["failed_reasons", "forge"]


def forge(
    bootstrap: str,
    topic: str,
    key: str,
    event: DomainEvent,
    headers: dict[str, str] | None = None,
) -> str:
    """Produce one record that looks like the relay's (CloudEvents headers, the event's JSON
    as its value); returns its ce_id."""
    ce_id = str(uuid.uuid4())
    sent = {"ce_id": ce_id, "ce_type": event.TYPE, "schema_version": "1", **(headers or {})}
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer.send(
            topic,
            key=key.encode(),
            value=canonical_json(event.model_dump(mode="json")).encode(),
            headers=[(name, value.encode()) for name, value in sent.items()],
        ).get(timeout=30)
    finally:
        producer.close()
    return ce_id


def failed_reasons(engine: Engine, group: str) -> dict[str, tuple[str | None, str]]:
    """event id -> (job, reason) of the group's failed jobs."""
    f = failed_jobs_table
    with engine.connect() as conn:
        rows: Any = conn.execute(
            select(f.c.event_id, f.c.job_name, f.c.reason).where(f.c.group_name == group)
        ).all()
    return {row.event_id: (row.job_name, row.reason) for row in rows}
