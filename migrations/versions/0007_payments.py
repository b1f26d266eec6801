"""payment webhooks and the payment ledger (issue 14)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Orders get their paid and refunded totals; every PAID order before this revision gets its
ledger entry (gateway "manual", as a rebuild of the projections would give it).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import outbox.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("paid_cents", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("refunded_cents", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("payment_failure", sa.String(length=200), nullable=True))
    op.create_table(
        "payment_ledger",
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("gateway", "payment_id", "kind"),
    )
    op.create_index("ix_payment_ledger_order_id", "payment_ledger", ["order_id"], unique=False)
    op.create_table(
        "payment_webhooks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("webhook_id", sa.String(length=255), nullable=False),
        sa.Column("scheme", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payment_id", sa.String(length=128), nullable=True),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("received_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("processed_at", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("gateway", "webhook_id", name="uq_payment_webhooks_gateway_webhook"),
    )
    # Orders paid before this revision: their totals, and their ledger entry.
    op.execute("UPDATE orders SET paid_cents = total_cents WHERE status = 'PAID'")
    op.execute(
        "INSERT INTO payment_ledger "
        "(gateway, payment_id, kind, order_id, tenant_id, amount_cents, recorded_at, event_id) "
        "SELECT 'manual', o.payment_ref, 'payment', o.id, o.tenant_id, o.total_cents, o.paid_at, e.event_id "
        "FROM orders o JOIN domain_events e ON e.aggregate_id = o.id AND e.type = 'order.paid' "
        "WHERE o.status = 'PAID'"
    )


def downgrade() -> None:
    op.drop_table("payment_webhooks")
    op.drop_index("ix_payment_ledger_order_id", table_name="payment_ledger")
    op.drop_table("payment_ledger")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("payment_failure")
        batch.drop_column("refunded_cents")
        batch.drop_column("paid_cents")
