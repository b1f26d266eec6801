"""payment webhooks and the payment ledger (issue 14)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Reserved by the parallel-work contract (docs/contracts/2026-12-02-parallel-work.md): the
branch that owns it fills it in and renames the file.
"""

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
