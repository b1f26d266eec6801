"""Wake-ups: on PostgreSQL a commit that adds outbox rows notifies the relays, and one that
adds webhook deliveries notifies the dispatchers (outbox.wakeup listens).

NOTIFY is transactional: it is delivered when (and only if) the transaction commits, so a
relay listening on `WAKEUP_CHANNEL` claims the new rows within milliseconds and an idle
relay does not poll. Identical notifications in one transaction are folded into one.
The unit of work folds the notification into its single statement (no extra round trip);
other writers call `notify` after `append`.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

__all__ = ["WAKEUP_CHANNEL", "WEBHOOKS_CHANNEL", "notify"]

WAKEUP_CHANNEL = "outbox_pending"
WEBHOOKS_CHANNEL = "webhook_deliveries"


def notify(conn: Connection, channel: str = WAKEUP_CHANNEL) -> None:
    """Queue a wake-up for `channel`'s listeners (the relays by default) in the caller's
    transaction (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})
