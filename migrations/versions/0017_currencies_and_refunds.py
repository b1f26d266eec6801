"""currencies on orders and the ledger, several refunds per payment (issue 24)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

`orders.currency` and `payment_ledger.currency`: an ISO 4217 code (domain/money.py). Rows
before this revision keep NULL: their currency is the DEFAULT_CURRENCY setting's, as a
rebuild of the projections gives them (their events name none).

`payment_ledger.refund_id` joins the ledger's key (gateway, payment_id, kind, refund_id), so
one payment can have several refunds; a payment's entry and the one refund a payment could
have before this revision get "".

`orders.status` widens to 32 characters for PARTIALLY_REFUNDED, which every order paid and
refunded in part before this revision becomes (as a rebuild gives it).
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_KEY = ["gateway", "payment_id", "kind", "refund_id"]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("orders") as batch:
        batch.alter_column(
            "status", type_=sa.String(32), existing_type=sa.String(16), existing_nullable=False
        )
        batch.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
    op.execute(
        "UPDATE orders SET status = 'PARTIALLY_REFUNDED' "
        "WHERE status = 'PAID' AND refunded_cents > 0 AND refunded_cents < paid_cents"
    )
    refund_id = sa.Column("refund_id", sa.String(128), server_default="", nullable=False)
    currency = sa.Column("currency", sa.String(length=3), nullable=True)
    if dialect == "sqlite":
        _copy_ledger_sqlite(_KEY, with_new_columns=True)
        return
    op.add_column("payment_ledger", refund_id)
    op.add_column("payment_ledger", currency)
    if dialect == "postgresql":
        op.execute(
            "ALTER TABLE payment_ledger DROP CONSTRAINT payment_ledger_pkey, "
            f"ADD CONSTRAINT payment_ledger_pkey PRIMARY KEY ({', '.join(_KEY)})"
        )
    else:
        op.execute(f"ALTER TABLE payment_ledger DROP PRIMARY KEY, ADD PRIMARY KEY ({', '.join(_KEY)})")


def downgrade() -> None:
    # Several refunds of one payment cannot fit the old key: the downgrade refuses them.
    dialect = op.get_bind().dialect.name
    key = ", ".join(_KEY[:3])
    if dialect == "sqlite":
        _copy_ledger_sqlite(_KEY[:3], with_new_columns=False)
    else:
        if dialect == "postgresql":
            op.execute(
                "ALTER TABLE payment_ledger DROP CONSTRAINT payment_ledger_pkey, "
                f"ADD CONSTRAINT payment_ledger_pkey PRIMARY KEY ({key})"
            )
        else:
            op.execute(f"ALTER TABLE payment_ledger DROP PRIMARY KEY, ADD PRIMARY KEY ({key})")
        op.drop_column("payment_ledger", "currency")
        op.drop_column("payment_ledger", "refund_id")
    op.execute("UPDATE orders SET status = 'PAID' WHERE status = 'PARTIALLY_REFUNDED'")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("currency")
        batch.alter_column(
            "status", type_=sa.String(16), existing_type=sa.String(32), existing_nullable=False
        )


def _copy_ledger_sqlite(key: list[str], *, with_new_columns: bool) -> None:
    """SQLite cannot change a primary key in place: a new table, the rows copied over."""
    columns = [
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
    ]
    if with_new_columns:
        columns.append(sa.Column("refund_id", sa.String(128), server_default="", nullable=False))
    columns += [
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
    ]
    if with_new_columns:
        columns.append(sa.Column("currency", sa.String(length=3), nullable=True))
    op.create_table("payment_ledger_0017", *columns, sa.PrimaryKeyConstraint(*key))
    kept = "gateway, payment_id, kind, order_id, tenant_id, amount_cents, recorded_at, event_id"
    op.execute(f"INSERT INTO payment_ledger_0017 ({kept}) SELECT {kept} FROM payment_ledger")  # noqa: S608 (constant column names)
    op.drop_index("ix_payment_ledger_order_id", table_name="payment_ledger")
    op.drop_table("payment_ledger")
    op.rename_table("payment_ledger_0017", "payment_ledger")
    op.create_index("ix_payment_ledger_order_id", "payment_ledger", ["order_id"], unique=False)
