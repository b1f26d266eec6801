"""tenant profile enrichment

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # filled in by its issue's work (docs/contracts/issues-15-16.md)


def downgrade() -> None:
    pass
