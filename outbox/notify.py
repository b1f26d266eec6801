"""Wake-ups: on PostgreSQL a commit that adds outbox rows notifies the relays.

NOTIFY is transactional: it is delivered when (and only if) the transaction commits, so a
relay listening on `WAKEUP_CHANNEL` claims the new rows within milliseconds and an idle
relay does not poll. Identical notifications in one transaction are folded into one.
The unit of work folds the notification into its single statement (no extra round trip);
other writers call `notify` after `append`.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

__all__ = ["NOTIFY_SQL", "WAKEUP_CHANNEL", "notify"]

WAKEUP_CHANNEL = "outbox_pending"
NOTIFY_SQL = f"SELECT pg_notify('{WAKEUP_CHANNEL}', '')"


def notify(conn: Connection) -> None:
    """Queue a wake-up for the relays in the caller's transaction (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(NOTIFY_SQL))
