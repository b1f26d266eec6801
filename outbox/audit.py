"""The audit trail of operator actions (park, release, skip, requeue, replay, prune).

Written in the same transaction as the action itself, so an action without its audit row
(or the reverse) cannot exist. `details` is JSON of counts, filters and previous states,
never payloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from outbox.envelope import canonical_json
from outbox.errors import Refused
from outbox.schema import audit_log_table as audit

__all__ = ["AuditEntry", "Refused", "entries", "record"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    reason: str | None
    details: str


def record(
    conn: Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    reason: str | None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Add one audit row in the caller's transaction."""
    conn.execute(
        audit.insert().values(
            at=at,
            actor=actor[:128],
            action=action,
            target=target[:300],
            reason=reason,
            details=canonical_json(dict(details or {})),
        )
    )


def entries(
    conn: Connection,
    *,
    limit: int = 50,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
) -> list[AuditEntry]:
    """The newest entries first, optionally filtered."""
    query = select(audit).order_by(audit.c.id.desc()).limit(limit)
    if action:
        query = query.where(audit.c.action == action)
    if target:
        query = query.where(audit.c.target == target)
    if since:
        query = query.where(audit.c.at >= since)
    return [AuditEntry(*row) for row in conn.execute(query)]
