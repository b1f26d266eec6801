"""`outbox prune`'s part for outbound webhooks: attempts older than the retention
(WEBHOOK_ATTEMPT_RETENTION_S), and finished deliveries (delivered, failed, cancelled)
created before it. Pending and leased deliveries are never touched, however old.

Short transactions of `batch_size` rows chosen by primary key and deleted by id list (no
range scan under a lock: MySQL/MariaDB take no gap locks the dispatcher could wait on).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, delete, func, select

from outbound.deliveries import DeliveryStatus
from outbox.schema_webhooks import webhook_attempts_table as a
from outbox.schema_webhooks import webhook_deliveries_table as d

__all__ = ["FINISHED", "prune_webhooks", "webhooks_to_prune"]

FINISHED = (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED)


def _old_attempts(cutoff: datetime) -> list[ColumnElement[bool]]:
    return [a.c.at < cutoff]


def _old_deliveries(cutoff: datetime) -> list[ColumnElement[bool]]:
    return [d.c.status.in_(FINISHED), d.c.created_at < cutoff]


def webhooks_to_prune(conn: Connection, cutoff: datetime) -> dict[str, int]:
    """How many attempts and finished deliveries a prune at `cutoff` would delete."""
    attempts = conn.execute(select(func.count()).where(*_old_attempts(cutoff))).scalar_one()
    finished = conn.execute(select(func.count()).where(*_old_deliveries(cutoff))).scalar_one()
    return {"webhook_attempts": int(attempts), "webhook_deliveries": int(finished)}


def prune_webhooks(engine: Engine, cutoff: datetime, *, batch_size: int = 1000) -> dict[str, int]:
    """Delete them, `batch_size` per transaction; how many of each went."""
    return {
        "webhook_attempts": _delete(engine, a, _old_attempts(cutoff), batch_size),
        "webhook_deliveries": _delete(engine, d, _old_deliveries(cutoff), batch_size),
    }


def _delete(engine: Engine, table: Any, where: list[ColumnElement[bool]], batch_size: int) -> int:
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(table.c.id).where(*where).order_by(table.c.id).limit(batch_size)
                ).scalars()
            )
            if not ids:
                return total
            # The conditions again: a delivery resent meanwhile is pending now, and stays.
            total += int(conn.execute(delete(table).where(table.c.id.in_(ids), *where)).rowcount)
        if len(ids) < batch_size:
            return total
