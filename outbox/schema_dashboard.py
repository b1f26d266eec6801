"""The dashboard's own tables (migration 0018, ADR 018): its server-side sessions and its
sign-in limits. In the database, so that every `outbox serve --dashboard --workers N`
process sees the same sessions and counts the same failures.

Neither table holds a secret or what a visitor typed: a session row is keyed by the SHA-256
of the cookie's random id, and a limit row by the SHA-256 of what it counts (a user name and
an address, an address, or a known browser).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table

from outbox.schema import metadata
from outbox.types import ExactString, UTCDateTime

__all__ = ["dashboard_login_limits_table", "dashboard_sessions_table"]

dashboard_sessions_table = Table(
    "dashboard_sessions",
    metadata,
    # SHA-256 (hex) of the random session id the cookie carries; the id itself is never stored.
    Column("id", ExactString(64), primary_key=True),
    Column("user_name", ExactString(64), nullable=False),
    Column("role", String(16), nullable=False),
    # SHA-256 (hex) of the user's password hash at sign-in: a changed hash revokes the session.
    Column("credential", ExactString(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    # Sign-in removes the expired rows, and a user's rows of an older password.
    Index("ix_dashboard_sessions_expires_at", "expires_at"),
    Index("ix_dashboard_sessions_user_name", "user_name"),
)

dashboard_login_limits_table = Table(
    "dashboard_login_limits",
    metadata,
    # SHA-256 (hex) of what is counted: (user name, address), an address, or a known browser.
    Column("key", ExactString(64), primary_key=True),
    # user-address | address | device (for an operator reading the table)
    Column("scope", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UTCDateTime(), nullable=False),
    # Refused until then (NULL: not blocked); doubles with each failure past the limit.
    Column("blocked_until", UTCDateTime(), nullable=True),
    # The row may go after this (sign-in removes such rows).
    Column("expires_at", UTCDateTime(), nullable=False),
    Index("ix_dashboard_login_limits_expires_at", "expires_at"),
)
