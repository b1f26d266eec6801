"""outbound webhooks: endpoints, deliveries, attempts (issue 25)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07

outbox/schema_webhooks.py says what each column holds; ADR 021 why.
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _exact(length: int) -> outbox.types.ExactString:
    return outbox.types.ExactString(length)


def _at(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, outbox.types.UTCDateTime(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", _exact(40), primary_key=True),
        sa.Column("tenant_id", _exact(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("event_types", sa.Text(), nullable=False),
        sa.Column("ordered", sa.Boolean(), nullable=False, server_default="0"),
        sa.Column("rate_limit_per_s", sa.Float(), nullable=True),
        sa.Column("signing", sa.String(4), nullable=False, server_default="v1"),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        _at("previous_expires_at", nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="enabled"),
        _at("paused_until", nullable=True),
        sa.Column("disabled_reason", sa.String(500), nullable=True),
        _at("disabled_at", nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        _at("failing_since", nullable=True),
        _at("next_send_at", nullable=True),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_index("ix_webhook_endpoints_tenant", "webhook_endpoints", ["tenant_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("endpoint_id", _exact(40), nullable=False),
        sa.Column("event_id", _exact(64), nullable=False),
        sa.Column("webhook_id", _exact(64), nullable=False),
        sa.Column("tenant_id", _exact(64), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        _at("next_attempt_at", nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        _at("lease_expires_at", nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        _at("created_at", nullable=False),
        _at("delivered_at", nullable=True),
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "status", "id"]
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("endpoint_id", _exact(40), nullable=False),
        sa.Column("event_id", _exact(64), nullable=False),
        sa.Column("webhook_id", _exact(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _at("at", nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
    )
    op.create_index("ix_webhook_attempts_endpoint_at", "webhook_attempts", ["endpoint_id", "at"])
    op.create_index("ix_webhook_attempts_event", "webhook_attempts", ["event_id"])
    op.create_index("ix_webhook_attempts_at", "webhook_attempts", ["at"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
