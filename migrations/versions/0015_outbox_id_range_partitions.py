"""outbox partitioned by id range on PostgreSQL (issue 21, stream X; ADR 013)

PostgreSQL: the outbox becomes a table partitioned by RANGE (id). The table as it was is
attached as its first partition, `outbox_p0` (MINVALUE up to the next id), without copying
a row: its indexes become the partitions of the new table's indexes, the id sequence goes
on as before. Then a DEFAULT partition (so a write never fails for want of a partition) and
`AHEAD` partitions of `DEFAULT_WIDTH` ids above it. Prune empties `outbox_p0` like any other
partition once all its rows are past retention. The upgrade takes ACCESS EXCLUSIVE on the
outbox for as long as attaching takes (one scan of the table to check the bound): stop the
writers and relays, or prune first, on a large outbox.

SQLite and MySQL/MariaDB: nothing changes (no MVCC heap bloat of this kind; ADR 013).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from alembic import op
from sqlalchemy import text

from outbox.partitions import AHEAD, DEFAULT_WIDTH

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_UPGRADE = [
    "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE",
    "ALTER TABLE outbox RENAME TO outbox_p0",
    "ALTER TABLE outbox_p0 RENAME CONSTRAINT outbox_pkey TO outbox_p0_pkey",
    "ALTER INDEX ix_outbox_status_shard_id RENAME TO outbox_p0_status_shard_id_idx",
    "ALTER INDEX ix_outbox_key_id RENAME TO outbox_p0_key_id_idx",
    "CREATE TABLE outbox (LIKE outbox_p0 INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
    "PARTITION BY RANGE (id)",
    "ALTER TABLE outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY (id)",
    "CREATE INDEX ix_outbox_status_shard_id ON outbox (status, shard, id)",
    "CREATE INDEX ix_outbox_key_id ON outbox (key, id)",
    "ALTER SEQUENCE outbox_id_seq OWNED BY outbox.id",
]

_DOWNGRADE = [
    "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE",
    "CREATE TABLE outbox_plain (LIKE outbox INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
    "INSERT INTO outbox_plain SELECT * FROM outbox",
    "ALTER SEQUENCE outbox_id_seq OWNED BY outbox_plain.id",
    "DROP TABLE outbox CASCADE",
    "ALTER TABLE outbox_plain RENAME TO outbox",
    "ALTER TABLE outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY (id)",
    "CREATE INDEX ix_outbox_status_shard_id ON outbox (status, shard, id)",
    "CREATE INDEX ix_outbox_key_id ON outbox (key, id)",
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for statement in _UPGRADE:
        bind.execute(text(statement))
    last, called = bind.execute(text("SELECT last_value, is_called FROM outbox_id_seq")).one()
    bound = int(last) + 1 if called else int(last)
    bind.execute(
        text(f"ALTER TABLE outbox ATTACH PARTITION outbox_p0 FOR VALUES FROM (MINVALUE) TO ({bound})")
    )
    bind.execute(text("CREATE TABLE outbox_default PARTITION OF outbox DEFAULT"))
    for k in range(AHEAD):
        lower = bound + k * DEFAULT_WIDTH
        bind.execute(
            text(
                f"CREATE TABLE outbox_p{lower} PARTITION OF outbox "
                f"FOR VALUES FROM ({lower}) TO ({lower + DEFAULT_WIDTH})"
            )
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for statement in _DOWNGRADE:
        bind.execute(text(statement))
