"""Endpoint, delivery and attempt rows written straight into the webhook tables, as the
endpoints store and the dispatcher write them (stream W5 tests without their code)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from outbox.schema import audit_log_table
from outbox.schema_webhooks import (
    webhook_attempts_table,
    webhook_deliveries_table,
    webhook_endpoints_table,
)

# What must never reach a page, a line or a JSON document: the stored (encrypted) secrets.
SECRET_CIPHERTEXT = "v1:kid1:CIPHERTEXT-NEVER-SHOWN-3q2+7w=="
PREVIOUS_CIPHERTEXT = "v1:kid0:PREVIOUS-CIPHERTEXT-NEVER-SHOWN=="


def add_endpoint(
    conn: Connection, endpoint_id: str, now: datetime, *, tenant: str = "acme", **fields: Any
) -> str:
    row: dict[str, Any] = {
        "id": endpoint_id,
        "tenant_id": tenant,
        "url": f"https://hooks.example.com/{endpoint_id}",
        "event_types": json.dumps(["order.*"]),
        "ordered": False,
        "signing": "v1",
        "secret": SECRET_CIPHERTEXT,
        "previous_secret": PREVIOUS_CIPHERTEXT,
        "state": "enabled",
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    conn.execute(insert(webhook_endpoints_table).values(**row))
    return endpoint_id


def webhook_id(event_id: str, endpoint_id: str) -> str:
    return "msg_" + hashlib.sha256(f"{event_id}:{endpoint_id}".encode()).hexdigest()[:32]


def add_delivery(
    conn: Connection,
    event_id: str,
    endpoint_id: str,
    now: datetime,
    *,
    status: str = "failed",
    attempts: int = 8,
    **fields: Any,
) -> int:
    row: dict[str, Any] = {
        "endpoint_id": endpoint_id,
        "event_id": event_id,
        "webhook_id": webhook_id(event_id, endpoint_id),
        "tenant_id": "acme",
        "event_type": "order.paid",
        "payload": json.dumps({"id": event_id, "type": "order.paid", "data": {}}),
        "status": status,
        "attempts": attempts,
        "next_attempt_at": now,
        "last_status_code": 500 if status == "failed" else None,
        "last_error": "HTTP 500" if status == "failed" else None,
        "created_at": now,
        **fields,
    }
    key = conn.execute(insert(webhook_deliveries_table).values(**row)).inserted_primary_key
    assert key is not None
    return int(key[0])


def add_attempt(
    conn: Connection,
    delivery_id: int,
    at: datetime,
    *,
    duration_ms: int = 100,
    outcome: str = "delivered",
    attempt: int = 1,
    **fields: Any,
) -> int:
    delivery = conn.execute(
        select(webhook_deliveries_table).where(webhook_deliveries_table.c.id == delivery_id)
    ).one()
    row: dict[str, Any] = {
        "delivery_id": delivery_id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "webhook_id": delivery.webhook_id,
        "attempt": attempt,
        "at": at,
        "duration_ms": duration_ms,
        "outcome": outcome,
        "status_code": 200 if outcome == "delivered" else 500,
        "error": None if outcome == "delivered" else "HTTPStatus",
        "response_excerpt": "ok" if outcome == "delivered" else "server error",
        **fields,
    }
    key = conn.execute(insert(webhook_attempts_table).values(**row)).inserted_primary_key
    assert key is not None
    return int(key[0])


def delivery(engine: Engine, delivery_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(webhook_deliveries_table).where(webhook_deliveries_table.c.id == delivery_id)
        ).one()


def audit_rows(engine: Engine, action: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(audit_log_table)
                .where(audit_log_table.c.action == action)
                .order_by(audit_log_table.c.id)
            )
        )
