"""placeholder: outbox claim under a held xmin horizon (stream X), issue 21; filled in by its stream or removed at merge

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
