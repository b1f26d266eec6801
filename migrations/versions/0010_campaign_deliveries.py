"""campaigns: per-recipient deliveries, opt-outs, completion counts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Four new tables (domain/schema.py): campaign_opt_outs and campaign_results (projections of
RecipientUnsubscribed and CampaignCompleted), campaign_fanouts (a launched campaign's batch
and keyset cursor) and campaign_deliveries (one row per campaign and recipient).
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_opt_outs",
        sa.Column("tenant_id", outbox.types.ExactString(length=64), nullable=False),
        sa.Column("email", outbox.types.ExactString(length=320), nullable=False),
        sa.Column("campaign_id", outbox.types.ExactString(length=64), nullable=True),
        sa.Column("opted_out_at", outbox.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "email"),
    )
    op.create_table(
        "campaign_results",
        sa.Column("campaign_id", outbox.types.ExactString(length=64), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("bounced", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("completed_at", outbox.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id"),
    )
    op.create_table(
        "campaign_fanouts",
        sa.Column("campaign_id", outbox.types.ExactString(length=64), nullable=False),
        sa.Column("batch_id", outbox.types.ExactString(length=36), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("dispatched", sa.Integer(), nullable=False),
        sa.Column("last_email", outbox.types.ExactString(length=320), nullable=True),
        sa.Column("started_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("dispatched_at", outbox.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id"),
        sa.UniqueConstraint("batch_id"),
    )
    op.create_table(
        "campaign_deliveries",
        sa.Column("campaign_id", outbox.types.ExactString(length=64), nullable=False),
        sa.Column("email", outbox.types.ExactString(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("taken_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", "email"),
    )


def downgrade() -> None:
    op.drop_table("campaign_deliveries")
    op.drop_table("campaign_fanouts")
    op.drop_table("campaign_results")
    op.drop_table("campaign_opt_outs")
