"""One message, once: the claim-send-record rows of order_notifications and
endpoint_notifications (domain/schema.py), as reminder_deliveries and campaign_deliveries
do it for their e-mails.

A message is (a) claimed: its row written `sending` and committed, (b) sent, (c) its
outcome recorded (`sent` with the provider's message id, `failed`: known not sent, tried
again; `refused`: the provider refused it for good). A redelivered record finds the row
`sent` and sends nothing. A crash between (b) and (c) leaves it `sending`: the next attempt
does not send it again by itself (it may have gone out) and fails for an operator, whose
`outbox failed retry` sends it once more (the only way a message goes out twice). A
`refused` row is retaken the same way, only by an operator's retry.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Table, and_, insert, select, update

__all__ = ["Claim", "State", "claim", "record"]


class State(StrEnum):
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    REFUSED = "refused"


class Claim(StrEnum):
    """What claiming a message came to."""

    TAKEN = "taken"  # send it now
    SENT = "sent"  # sent before: nothing to do
    REFUSED = "refused"  # refused for good before: not sent again by itself
    UNKNOWN = "unknown"  # claimed before, outcome never recorded: not sent again by itself


def claim(
    conn: Connection,
    table: Table,
    key: dict[str, str],
    *,
    tenant_id: str,
    now: datetime,
    resent: bool,
    extra: dict[str, Any] | None = None,
) -> Claim:
    """Claim one message in `conn`'s transaction (commit it before sending). `resent`: an
    operator's retry, which retakes an `unknown` or `refused` one."""
    where = and_(*(table.c[name] == value for name, value in key.items()))
    row = conn.execute(
        select(table.c.state, table.c.attempts).where(where).with_for_update()
    ).one_or_none()
    if row is None:
        values = {
            **key,
            **(extra or {}),
            "tenant_id": tenant_id,
            "state": State.SENDING,
            "attempts": 1,
            "claimed_at": now,
        }
        conn.execute(insert(table).values(values))
        return Claim.TAKEN
    if row.state == State.SENT:
        return Claim.SENT
    if row.state in (State.SENDING, State.REFUSED) and not resent:
        return Claim.UNKNOWN if row.state == State.SENDING else Claim.REFUSED
    taken = conn.execute(
        update(table)
        .where(where, table.c.state == row.state)
        .values(state=State.SENDING, attempts=row.attempts + 1, claimed_at=now, last_error=None)
    )
    if not taken.rowcount:
        raise RuntimeError(f"the {table.name} row was claimed meanwhile; tried again")
    return Claim.TAKEN


def record(
    conn: Connection,
    table: Table,
    key: dict[str, str],
    state: State,
    now: datetime,
    *,
    message_id: str | None = None,
    error: str | None = None,
) -> None:
    """The outcome of a claimed message (`error` already masked)."""
    values: dict[str, Any] = {"state": state, "last_error": error and error[:1000]}
    if state == State.SENT:
        values.update(sent_at=now, provider_message_id=message_id)
    where = and_(*(table.c[name] == value for name, value in key.items()))
    conn.execute(update(table).where(where, table.c.state == State.SENDING).values(values))
