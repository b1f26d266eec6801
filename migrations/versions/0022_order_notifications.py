"""order-status notifications: customer phone, tenant channels, notifications sent (issue 25)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07

domain/schema.py says what each column holds; ADR 021 decision 10 and docs/webhooks.md
("Order-status notifications") why.
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def _notification_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("tenant_id", outbox.types.ExactString(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("sent_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("provider_message_id", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("customer_phone", sa.String(32), nullable=True))
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column(
                "notification_channels", sa.String(32), nullable=False, server_default="email"
            )
        )
    op.create_table(
        "order_notifications",
        sa.Column("order_id", outbox.types.ExactString(64), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("channel", sa.String(8), primary_key=True),
        *_notification_columns(),
    )
    op.create_table(
        "endpoint_notifications",
        sa.Column("event_id", outbox.types.ExactString(64), primary_key=True),
        sa.Column("endpoint_id", outbox.types.ExactString(40), nullable=False),
        *_notification_columns(),
    )


def downgrade() -> None:
    op.drop_table("endpoint_notifications")
    op.drop_table("order_notifications")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("notification_channels")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("customer_phone")
