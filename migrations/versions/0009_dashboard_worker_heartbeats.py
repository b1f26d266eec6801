"""dashboard: worker heartbeats (what runs now) and the indexes its filters need

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # filled in by its issue's work (docs/contracts/issues-15-16.md)


def downgrade() -> None:
    pass
