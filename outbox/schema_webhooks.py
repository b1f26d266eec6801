"""The tables of outbound webhooks (issue 25, ADR 021): the tenants' endpoints, one
delivery per (event, endpoint), and every attempt to deliver one.

Everything lives in the outbox's database: no cache outage can drop a retry. The signing
secrets are stored encrypted (outbound.secrets); the URL is checked again on every attempt
(outbound.ssrf), never trusted because it was checked when it was added.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from outbox.schema import metadata
from outbox.types import ExactString, UTCDateTime

__all__ = [
    "webhook_attempts_table",
    "webhook_deliveries_table",
    "webhook_endpoints_table",
]

_Id = BigInteger().with_variant(Integer(), "sqlite")

webhook_endpoints_table = Table(
    "webhook_endpoints",
    metadata,
    Column("id", ExactString(40), primary_key=True),  # "ep_" + 26 url-safe characters
    Column("tenant_id", ExactString(64), nullable=False),
    Column("url", Text, nullable=False),  # at most 2,048 characters, checked at add
    Column("description", String(500), nullable=True),
    # JSON list of exact event types ("order.paid") or prefixes ("order.*", "*").
    Column("event_types", Text, nullable=False),
    Column("ordered", Boolean, nullable=False, server_default="0"),
    Column("rate_limit_per_s", Float, nullable=True),  # None: no limit
    # "v1" (HMAC-SHA256) or "v1a" (ed25519).
    Column("signing", String(4), nullable=False, server_default="v1"),
    # Encrypted (outbound.secrets): the current secret, and the one it replaced, which
    # still signs until previous_expires_at (the rotation's overlap).
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text, nullable=True),
    Column("previous_expires_at", UTCDateTime(), nullable=True),
    # "enabled", "paused" (by the breaker, until paused_until) or "disabled" (with a reason).
    Column("state", String(16), nullable=False, server_default="enabled"),
    Column("paused_until", UTCDateTime(), nullable=True),
    Column("disabled_reason", String(500), nullable=True),
    Column("disabled_at", UTCDateTime(), nullable=True),
    # Health: failures in a row (the breaker), and since when it has failed without a
    # success (the 5-day auto-disable); a success clears both.
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("failing_since", UTCDateTime(), nullable=True),
    # Rate limit across every worker: the earliest time the next attempt may start.
    Column("next_send_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Index("ix_webhook_endpoints_tenant", "tenant_id"),
)

webhook_deliveries_table = Table(
    "webhook_deliveries",
    metadata,
    # Ascending in the order the deliveries were made: an ordered endpoint receives by id.
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("endpoint_id", ExactString(40), nullable=False),
    Column("event_id", ExactString(64), nullable=False),
    # "msg_" + a digest of (event, endpoint): the same on every attempt and every resend.
    Column("webhook_id", ExactString(64), nullable=False),
    Column("tenant_id", ExactString(64), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("payload", Text, nullable=False),  # the envelope's JSON, as signed and sent
    # "pending", "delivering" (leased), "delivered", "failed" (after the last try),
    # "cancelled" (its endpoint was disabled or removed).
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),  # an error class or a reason
    Column("created_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    # An ordered endpoint's oldest undelivered delivery, and its failed ones (recover),
    # without walking its delivered history.
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "status", "id"),
)

webhook_attempts_table = Table(
    "webhook_attempts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("delivery_id", BigInteger, nullable=False),
    Column("endpoint_id", ExactString(40), nullable=False),
    Column("event_id", ExactString(64), nullable=False),
    Column("webhook_id", ExactString(64), nullable=False),
    Column("attempt", Integer, nullable=False),  # 1 for the first
    Column("at", UTCDateTime(), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    # "delivered", "failed", "throttled", "gone" (410), "refused" (SSRF policy).
    Column("outcome", String(16), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", String(200), nullable=True),  # an error class, never a secret
    Column("response_excerpt", Text, nullable=True),  # first 4 KiB, through the redactor
    Index("ix_webhook_attempts_endpoint_at", "endpoint_id", "at"),
    Index("ix_webhook_attempts_event", "event_id"),
    Index("ix_webhook_attempts_at", "at"),
)
