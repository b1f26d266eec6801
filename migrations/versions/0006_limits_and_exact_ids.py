"""limits and exact ids: BIGINT amounts and quantities; binary NO PAD collation on MySQL/MariaDB for every id and key column (issue 13)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- products.price_cents, products.stock_quantity and orders.total_cents become BIGINT
  (SQLite's INTEGER is 64-bit already: nothing to do there).
- On MySQL/MariaDB every id and key column (aggregate ids, tenant ids, the outbox key, parked
  keys, event ids, topics, group and job names, lock keys...) gets the binary NO PAD
  collation (utf8mb4_nopad_bin on MariaDB, utf8mb4_0900_bin on MySQL 8): the default
  utf8mb4_general_ci took `CASE-ANVIL` for `case-anvil`, `café` for `cafe`, and
  utf8mb4_bin would still take `anvil   ` for `anvil` (it pads). PostgreSQL and SQLite
  compare exactly already.

MySQL rebuilds each altered table (its indexes included): on a large outbox, prune first.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import outbox.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

AMOUNTS = [("products", "price_cents"), ("products", "stock_quantity"), ("orders", "total_cents")]

# (table, column, length, nullable): the columns declared ExactString in the schema modules.
EXACT = [
    ("domain_events", "aggregate_type", 64, False),
    ("domain_events", "aggregate_id", 64, False),
    ("domain_events", "event_id", 36, False),
    ("domain_events", "type", 255, False),
    ("tenants", "id", 64, False),
    ("products", "id", 64, False),
    ("products", "tenant_id", 64, False),
    ("products", "sku", 64, False),
    ("orders", "id", 64, False),
    ("orders", "tenant_id", 64, False),
    ("orders", "payment_ref", 128, True),
    ("appointments", "id", 64, False),
    ("appointments", "tenant_id", 64, False),
    ("campaigns", "id", 64, False),
    ("campaigns", "tenant_id", 64, False),
    ("campaign_recipients", "campaign_id", 64, False),
    ("campaign_recipients", "email", 320, False),
    ("interactions", "id", 64, False),
    ("interactions", "tenant_id", 64, False),
    ("interactions", "visitor_id", 64, False),
    ("interactions", "product_id", 64, True),
    ("visitor_activity", "tenant_id", 64, False),
    ("visitor_activity", "visitor_id", 64, False),
    ("tenant_daily_analytics", "tenant_id", 64, False),
    ("tenant_daily_analytics", "day", 10, False),
    ("reminder_deliveries", "appointment_id", 64, False),
    ("outbox", "event_id", 36, False),
    ("outbox", "topic", 249, False),
    ("outbox", "key", 255, False),
    ("outbox", "type", 255, False),
    ("outbox", "replay_id", 36, True),
    ("relay_instances", "instance_id", 128, False),
    ("relay_leases", "owner", 128, True),
    ("inbox", "group_name", 100, False),
    ("inbox", "job_name", 100, False),
    ("inbox", "message_id", 80, False),
    ("failed_jobs", "group_name", 100, False),
    ("failed_jobs", "job_name", 100, True),
    ("failed_jobs", "event_id", 80, True),
    ("failed_jobs", "type", 255, True),
    ("failed_jobs", "topic", 249, False),
    ("failed_jobs", "message_key", 255, True),
    ("job_locks", "job_name", 100, False),
    ("job_locks", "lock_key", 255, False),
    ("job_locks", "message_id", 80, False),
    ("job_batches", "id", 36, False),
    ("job_batches", "name", 255, False),
    ("job_batches", "group_name", 100, False),
    ("job_batches", "then_job", 100, True),
    ("job_batches", "catch_job", 100, True),
    ("job_batches", "finally_job", 100, True),
    ("parked_keys", "key", 255, False),
    ("audit_log", "action", 32, False),
    ("audit_log", "target", 300, False),
    ("replays", "id", 36, False),
    ("scheduler_leader", "name", 64, False),
    ("scheduler_leader", "owner", 128, True),
    ("scheduler_firings", "job", 100, False),
    ("scheduler_firings", "owner", 128, False),
    ("scheduler_firings", "message_id", 36, True),
]

# campaign_recipients.campaign_id references campaigns.id: MySQL refuses to change the
# collation of either side while the constraint stands.
FK = ("campaign_recipients", "campaigns", ["campaign_id"], ["id"])


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def _fk_name() -> str | None:
    for fk in sa.inspect(op.get_bind()).get_foreign_keys(FK[0]):
        if fk["referred_table"] == FK[1]:
            return fk["name"]
    return None


def _collate(collation: str | None) -> None:
    name = _fk_name()
    if name is not None:
        op.drop_constraint(name, FK[0], type_="foreignkey")
    for table, column, length, nullable in EXACT:
        op.alter_column(
            table,
            column,
            type_=mysql.VARCHAR(length, collation=collation),
            existing_nullable=nullable,
        )
    op.create_foreign_key(name, FK[0], FK[1], FK[2], FK[3])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in AMOUNTS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_nullable=False)
    if _is_mysql():
        _collate(outbox.types.exact_collation(op.get_bind().dialect))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    if _is_mysql():
        _collate("utf8mb4_general_ci")
    for table, column in AMOUNTS:
        op.alter_column(table, column, type_=sa.Integer(), existing_nullable=False)
