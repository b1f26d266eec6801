"""consumer runtime: inbox, failed jobs, job locks, batches; analytics read models

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import outbox.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "failed_jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("group_name", sa.String(length=100), nullable=False),
        sa.Column("job_name", sa.String(length=100), nullable=True),
        sa.Column("event_id", sa.String(length=80), nullable=True),
        sa.Column("type", sa.String(length=255), nullable=True),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column(
            "kafka_offset", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("message_key", sa.String(length=255), nullable=True),
        sa.Column(
            "payload",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("payload_encoding", sa.String(length=8), server_default="utf-8", nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("exception_class", sa.String(length=255), nullable=True),
        sa.Column("exception_message", sa.Text(), nullable=True),
        sa.Column(
            "traceback",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", outbox.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_failed_jobs_group_id", "failed_jobs", ["group_name", "id"], unique=False)
    op.create_table(
        "inbox",
        sa.Column("group_name", sa.String(length=100), nullable=False),
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("message_id", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("processed_at", outbox.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("group_name", "job_name", "message_id"),
    )
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"], unique=False)
    op.create_table(
        "job_batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("group_name", sa.String(length=100), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("then_job", sa.String(length=100), nullable=True),
        sa.Column("catch_job", sa.String(length=100), nullable=True),
        sa.Column("finally_job", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_batches_finished_at", "job_batches", ["finished_at"], unique=False)
    op.create_table(
        "job_locks",
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("lock_key", sa.String(length=255), nullable=False),
        sa.Column("expires_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("message_id", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("job_name", "lock_key"),
    )


    op.create_table(
        "visitor_activity",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("visitor_id", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("interactions", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "visitor_id"),
    )
    op.create_table(
        "tenant_daily_analytics",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("page_views", sa.Integer(), nullable=False),
        sa.Column("product_views", sa.Integer(), nullable=False),
        sa.Column("add_to_cart", sa.Integer(), nullable=False),
        sa.Column("checkouts", sa.Integer(), nullable=False),
        sa.Column("unique_visitors", sa.Integer(), nullable=False),
        sa.Column("computed_at", outbox.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("tenant_daily_analytics")
    op.drop_table("visitor_activity")
    op.drop_table("job_locks")
    op.drop_index("ix_job_batches_finished_at", table_name="job_batches")
    op.drop_table("job_batches")
    op.drop_index("ix_inbox_processed_at", table_name="inbox")
    op.drop_table("inbox")
    op.drop_index("ix_failed_jobs_group_id", table_name="failed_jobs")
    op.drop_table("failed_jobs")
