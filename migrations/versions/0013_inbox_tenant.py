"""inbox: the message's tenant (the dashboard's jobs search by tenant, issue 15)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

The worker fills `tenant_id` from the record's tenant_id header when it claims the inbox
row (the same statement as before, one more column). Rows handled before this revision
keep NULL: a tenant search finds what was handled since. Adding a nullable column is a
catalogue change on PostgreSQL and MariaDB; building the index reads the inbox once.
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inbox", sa.Column("tenant_id", outbox.types.ExactString(64), nullable=True))
    op.create_index(
        "ix_inbox_tenant_processed_at", "inbox", ["tenant_id", "processed_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_tenant_processed_at", table_name="inbox")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("tenant_id")
