"""dashboard round two: server-side sessions and sign-in limits shared by every process (issue 23, stream a)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

`dashboard_sessions`: one row per signed-in browser, keyed by the SHA-256 of the cookie's
random id; sign-out, a removed user and a changed password hash delete it at once.
`dashboard_login_limits`: failed sign-ins per (user, address), per address and per known
browser, with their back-off. Both new and empty; sessions signed before this migration
(a cookie that was the whole session) are no longer accepted: everyone signs in again.
"""

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", outbox.types.ExactString(64), nullable=False),
        sa.Column("user_name", outbox.types.ExactString(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("credential", outbox.types.ExactString(64), nullable=False),
        sa.Column("created_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", outbox.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"], unique=False
    )
    op.create_index(
        "ix_dashboard_sessions_user_name", "dashboard_sessions", ["user_name"], unique=False
    )
    op.create_table(
        "dashboard_login_limits",
        sa.Column("key", outbox.types.ExactString(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("blocked_until", outbox.types.UTCDateTime(), nullable=True),
        sa.Column("expires_at", outbox.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(
        "ix_dashboard_login_limits_expires_at",
        "dashboard_login_limits",
        ["expires_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_dashboard_login_limits_expires_at", table_name="dashboard_login_limits")
    op.drop_table("dashboard_login_limits")
    op.drop_index("ix_dashboard_sessions_user_name", table_name="dashboard_sessions")
    op.drop_index("ix_dashboard_sessions_expires_at", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
