"""placeholder: e-mail robustness (stream M), issue 21; filled in by its stream or removed at merge

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
