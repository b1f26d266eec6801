"""relay instances and shard leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_instances",
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", outbox.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id"),
    )
    op.create_table(
        "relay_leases",
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column(
            "epoch",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            server_default="0",
            nullable=False,
        ),
        sa.Column("expires_at", outbox.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("shard"),
    )


def downgrade() -> None:
    op.drop_table("relay_leases")
    op.drop_table("relay_instances")
