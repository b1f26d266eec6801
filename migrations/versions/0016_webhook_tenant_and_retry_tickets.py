"""jobs trust the database: payment_webhooks.tenant_id, failed_job_retries (issue 21, stream T)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

`payment_webhooks.tenant_id`: the tenant of the order a verified notice named, written when
`outbox serve` accepts it; the payments job pays only an order of that tenant. Rows accepted
before keep NULL (their order's own tenant is taken). A nullable column is a catalogue
change on PostgreSQL and MariaDB.

`failed_job_retries`: one ticket per failed job an operator retried; a retry copy's
`x-failed-job-id` is honoured only while its ticket is `retrying` (ADR 014). New and empty.
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "payment_webhooks",
        sa.Column("tenant_id", outbox.types.ExactString(64), nullable=True),
    )
    op.create_table(
        "failed_job_retries",
        sa.Column(
            "failed_job_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("group_name", outbox.types.ExactString(100), nullable=False),
        sa.Column("job_name", outbox.types.ExactString(100), nullable=True),
        sa.Column("event_id", outbox.types.ExactString(80), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("retried_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("honoured_at", outbox.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("failed_job_id"),
    )
    op.create_index(
        "ix_failed_job_retries_retried_at", "failed_job_retries", ["retried_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_failed_job_retries_retried_at", table_name="failed_job_retries")
    op.drop_table("failed_job_retries")
    with op.batch_alter_table("payment_webhooks") as batch:
        batch.drop_column("tenant_id")
