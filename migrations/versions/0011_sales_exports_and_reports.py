"""sales exports and PDF reports behind signed URLs

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # filled in by its issue's work (docs/contracts/issues-15-16.md)


def downgrade() -> None:
    pass
