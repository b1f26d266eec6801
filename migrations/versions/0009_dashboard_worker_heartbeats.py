"""dashboard: worker heartbeats (what runs now), failed jobs' tenant, and the indexes the dashboard's filters need (issue 15)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FAILED_INDEXES = [
    ("ix_failed_jobs_job_id", ["job_name", "id"]),
    ("ix_failed_jobs_exception_id", ["exception_class", "id"]),
    ("ix_failed_jobs_event_id", ["event_id"]),
    ("ix_failed_jobs_message_key", ["message_key"]),
    ("ix_failed_jobs_tenant_id", ["tenant_id", "id"]),
]


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", outbox.types.ExactString(128), nullable=False),
        sa.Column("group_name", outbox.types.ExactString(100), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("job_name", outbox.types.ExactString(100), nullable=True),
        sa.Column("message_id", outbox.types.ExactString(80), nullable=True),
        sa.Column("message_key", outbox.types.ExactString(255), nullable=True),
        sa.Column("job_started_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("handled", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), server_default="0", nullable=False),
        sa.Column("recent", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id"),
    )
    with op.batch_alter_table("failed_jobs") as batch:
        batch.add_column(sa.Column("tenant_id", outbox.types.ExactString(64), nullable=True))
    for name, columns in FAILED_INDEXES:
        op.create_index(name, "failed_jobs", columns, unique=False)


def downgrade() -> None:
    for name, _ in FAILED_INDEXES:
        op.drop_index(name, table_name="failed_jobs")
    with op.batch_alter_table("failed_jobs") as batch:
        batch.drop_column("tenant_id")
    op.drop_table("worker_heartbeats")
