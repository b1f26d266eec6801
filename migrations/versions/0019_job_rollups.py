"""per-minute rollups for the dashboard's charts (issue 23)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

`job_rollups`: per (grain, interval start, kind, group or topic, job) the counts published,
handled, failed, retried, summed wait and run milliseconds, and two 30-bucket log
histograms (w00..w29 wait, r00..r29 run); outbox/schema_rollups.py and outbox/histogram.py
say what they hold. Written by the workers and relays, pruned by `outbox prune`.
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_BUCKETS = 30


def _count(name: str) -> sa.Column[int]:
    return sa.Column(
        name,
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        nullable=False,
        server_default="0",
    )


def upgrade() -> None:
    op.create_table(
        "job_rollups",
        sa.Column("grain", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("group_name", outbox.types.ExactString(255), primary_key=True),
        sa.Column("job_name", outbox.types.ExactString(100), primary_key=True),
        *[
            _count(name)
            for name in ("published", "handled", "failed", "retried", "wait_ms_sum", "run_ms_sum")
        ],
        *[_count(f"w{i:02d}") for i in range(_BUCKETS)],
        *[_count(f"r{i:02d}") for i in range(_BUCKETS)],
    )


def downgrade() -> None:
    op.drop_table("job_rollups")
