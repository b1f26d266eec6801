"""Operator repairs of a stuck key: park, release, skip, requeue. Each one is a single
transaction with its audit row (`outbox.audit`); a refusal raises `Refused` and changes
nothing.

- park: the key goes into `parked_keys`; the relay skips every row of it, including rows
  committed after the park, while other keys flow. The rows keep status `pending`, so
  `release` (deleting the parked_keys row) undoes a park exactly and they flow in order.
- skip: a pending row becomes `dead` with the operator's reason, so the key's later rows
  flow (the poisoned head is given up; `requeue` brings it back).
- requeue: a `dead` (or `parked`) row becomes `pending` again with attempts reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from outbox.audit import Refused, record
from outbox.schema import OutboxStatus
from outbox.schema import outbox_table as o
from outbox.schema import parked_keys_table as parked

__all__ = ["ActionResult", "park", "release", "requeue", "skip"]


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: str
    target: str
    changed: bool
    # Rows concerned (pending rows held or released, or the one message), and notes.
    rows: int
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "changed": self.changed,
            "rows": self.rows,
            "note": self.note,
        }


def _pending_of(conn: Connection, key: str) -> int:
    return int(
        conn.execute(
            select(func.count()).where(o.c.key == key, o.c.status == OutboxStatus.PENDING)
        ).scalar_one()
    )


def park(
    conn: Connection, key: str, *, actor: str, reason: str | None, now: datetime
) -> ActionResult:
    """Hold every row of `key` (pending now or committed later) until `release`."""
    if not key:
        raise Refused("--key must not be empty")
    existing = conn.execute(select(parked).where(parked.c.key == key)).first()
    pending = _pending_of(conn, key)
    if existing is not None:
        note = f"already parked since {existing.parked_at.isoformat()} by {existing.actor}"
        return ActionResult("park", f"key:{key}", False, pending, note)
    conn.execute(parked.insert().values(key=key, parked_at=now, actor=actor[:128], reason=reason))
    record(
        conn,
        at=now,
        actor=actor,
        action="park",
        target=f"key:{key}",
        reason=reason,
        details={"pending_rows": pending},
    )
    note = "" if pending else "no pending rows yet: rows committed from now on are held"
    return ActionResult("park", f"key:{key}", True, pending, note)


def release(
    conn: Connection, key: str, *, actor: str, reason: str | None, now: datetime
) -> ActionResult:
    """Let a parked key flow again, its rows in their original order."""
    deleted = conn.execute(parked.delete().where(parked.c.key == key)).rowcount
    if not deleted:
        raise Refused(f"key {key!r} is not parked (see `outbox coroner` for the parked keys)")
    pending = _pending_of(conn, key)
    record(
        conn,
        at=now,
        actor=actor,
        action="release",
        target=f"key:{key}",
        reason=reason,
        details={"pending_rows": pending},
    )
    return ActionResult("release", f"key:{key}", True, pending)


def _row(conn: Connection, outbox_id: int, allowed: tuple[str, ...], refusal: str) -> Any:
    """The message, refused unless its status is one of `allowed`."""
    row = conn.execute(
        select(o.c.id, o.c.key, o.c.status, o.c.attempts, o.c.last_error).where(o.c.id == outbox_id)
    ).first()
    if row is None:
        raise Refused(f"no outbox message with id {outbox_id}")
    if row.status not in allowed:
        raise Refused(f"message {outbox_id} is {row.status}: {refusal}")
    return row


def _before(row: Any) -> dict[str, Any]:
    """What the audit log keeps of a message before a repair."""
    return {
        "key": row.key,
        "previous_status": row.status,
        "attempts": row.attempts,
        "last_error": (row.last_error or "")[:500],
    }


def skip(
    conn: Connection, outbox_id: int, *, actor: str, reason: str | None, now: datetime
) -> ActionResult:
    """Give up a pending row: `dead` with the reason, so its key's later rows flow."""
    row = _row(
        conn,
        outbox_id,
        (OutboxStatus.PENDING, OutboxStatus.PARKED),
        "only pending or parked messages can be skipped (a published one can be replayed "
        "with `outbox replay`)",
    )
    why = f"skipped by {actor}" + (f": {reason}" if reason else "")
    changed = conn.execute(
        update(o)
        .where(o.c.id == outbox_id, o.c.status == row.status)
        .values(status=OutboxStatus.DEAD, last_error=why)
    ).rowcount
    if not changed:
        raise Refused(f"message {outbox_id} changed meanwhile (published?); nothing done")
    record(
        conn,
        at=now,
        actor=actor,
        action="skip",
        target=f"message:{outbox_id}",
        reason=reason,
        details=_before(row),
    )
    note = "a relay may already have this row in flight; it then reaches Kafka once more"
    return ActionResult("skip", f"message:{outbox_id}", True, 1, note)


def requeue(
    conn: Connection, outbox_id: int, *, actor: str, reason: str | None, now: datetime
) -> ActionResult:
    """A dead or parked row goes back to pending, attempts reset, due now."""
    row = _row(
        conn,
        outbox_id,
        (OutboxStatus.DEAD, OutboxStatus.PARKED),
        "only dead or parked messages can be requeued",
    )
    conn.execute(
        update(o)
        .where(o.c.id == outbox_id, o.c.status == row.status)
        .values(status=OutboxStatus.PENDING, attempts=0, available_at=now, last_error=None)
    )
    later = int(
        conn.execute(
            select(func.count()).where(
                o.c.key == row.key, o.c.id > outbox_id, o.c.status == OutboxStatus.PUBLISHED
            )
        ).scalar_one()
    )
    record(
        conn,
        at=now,
        actor=actor,
        action="requeue",
        target=f"message:{outbox_id}",
        reason=reason,
        details={**_before(row), "later_rows_already_published": later},
    )
    note = (
        f"{later} later message(s) of key {row.key!r} were already published: this one now "
        "reaches Kafka after them"
        if later
        else ""
    )
    return ActionResult("requeue", f"message:{outbox_id}", True, 1, note)
