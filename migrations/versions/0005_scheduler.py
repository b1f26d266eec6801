"""scheduler: leader lease and fired slots; appointment reminder deliveries

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_leader",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column(
            "epoch",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            server_default="0",
            nullable=False,
        ),
        sa.Column("expires_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("acquired_at", outbox.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "scheduler_firings",
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("slot", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("fired_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.Column("coalesced", sa.Integer(), server_default="0", nullable=False),
        sa.Column("manual", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("params", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job", "slot"),
    )
    op.create_table(
        "reminder_deliveries",
        sa.Column("appointment_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("taken_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("appointment_id"),
    )


def downgrade() -> None:
    op.drop_table("reminder_deliveries")
    op.drop_table("scheduler_firings")
    op.drop_table("scheduler_leader")
