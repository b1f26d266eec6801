"""sales exports and PDF reports behind signed URLs

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

The sales_exports projection (domain/reporting.py), and an index on orders by tenant and
placement time: an export walks one tenant's orders of a period in keyset chunks.
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sales_exports",
        sa.Column("id", outbox.types.ExactString(64), nullable=False),
        sa.Column("tenant_id", outbox.types.ExactString(64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("period_from", outbox.types.ExactString(10), nullable=False),
        sa.Column("period_to", outbox.types.ExactString(10), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=True),
        sa.Column("byte_count", sa.BigInteger(), nullable=True),
        sa.Column("sha256", outbox.types.ExactString(64), nullable=True),
        sa.Column("path", sa.String(length=500), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("url_expires_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("ready_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sales_exports_tenant_requested", "sales_exports", ["tenant_id", "requested_at"], unique=False)
    op.create_index("ix_sales_exports_status_expires", "sales_exports", ["status", "url_expires_at"], unique=False)
    op.create_index("ix_orders_tenant_placed_at", "orders", ["tenant_id", "placed_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_orders_tenant_placed_at", table_name="orders")
    op.drop_index("ix_sales_exports_status_expires", table_name="sales_exports")
    op.drop_index("ix_sales_exports_tenant_requested", table_name="sales_exports")
    op.drop_table("sales_exports")
