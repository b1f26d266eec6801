"""campaigns: per-recipient deliveries, opt-outs, completion counts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # filled in by its issue's work (docs/contracts/issues-15-16.md)


def downgrade() -> None:
    pass
