"""relay progress: relay_instances.progress_at and last_published_at, so that a relay holding shards with due rows and publishing nothing can be named (issue 21)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("relay_instances") as batch:
        batch.add_column(sa.Column("progress_at", outbox.types.UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("last_published_at", outbox.types.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("relay_instances") as batch:
        batch.drop_column("last_published_at")
        batch.drop_column("progress_at")
