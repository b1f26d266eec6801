"""inbox: payload digest (a reused event id with another payload is told from a duplicate)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inbox", sa.Column("payload_digest", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("inbox", "payload_digest")
