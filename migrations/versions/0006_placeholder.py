"""limits and exact ids: BIGINT amounts, binary collation on MariaDB (issue 13)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Reserved by the parallel-work contract (docs/contracts/2026-12-02-parallel-work.md): the
branch that owns it fills it in and renames the file.
"""

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
