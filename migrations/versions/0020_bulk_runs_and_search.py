"""dashboard round two, stream b: background bulk actions and substring search (issue 23)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07

`bulk_runs`: one row per operator's bulk action run in the background (outbox/bulk_runs.py).

PostgreSQL only: trigram (pg_trgm) GIN indexes for the dashboard's substring search, on
failed_jobs (message_key, event_id, exception_message, payload); none on the outbox, whose
every index costs every command a write (ADR 011): its search scans a window. Creating
the extension needs a role that may (a superuser, or the database owner on PostgreSQL 13+
where pg_trgm is trusted). When it cannot be created the revision logs a warning and skips
the indexes: the search still works, as a scan (docs/dashboard.md). SQLite and MariaDB have
no trigram index: their search is the documented slower path (LIKE over the rows).
"""

import logging

import sqlalchemy as sa
from alembic import op

import outbox.types

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

TRIGRAM = [
    ("ix_failed_jobs_key_trgm", "failed_jobs", "message_key"),
    ("ix_failed_jobs_event_id_trgm", "failed_jobs", "event_id"),
    ("ix_failed_jobs_exception_message_trgm", "failed_jobs", "exception_message"),
    ("ix_failed_jobs_payload_trgm", "failed_jobs", "payload"),
]


def upgrade() -> None:
    op.create_table(
        "bulk_runs",
        sa.Column("id", outbox.types.ExactString(36), nullable=False),
        sa.Column("actor", outbox.types.ExactString(128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("filter", sa.Text(), nullable=False),
        sa.Column("described", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reviewed_by", outbox.types.ExactString(128), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("started_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", outbox.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", outbox.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bulk_runs_started_at", "bulk_runs", ["started_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql" and _trigram_available():
        for name, table, column in TRIGRAM:
            op.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ({column} gin_trgm_ops)"
            )


def _trigram_available() -> bool:
    """Create pg_trgm if it is not there; False (logged) when this role may not."""
    bind = op.get_bind()
    savepoint = bind.begin_nested()
    try:
        bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        log.warning(
            "pg_trgm could not be created (%s): the dashboard's substring search runs without "
            "trigram indexes (a scan); to add them, create the extension as a superuser and "
            "the indexes listed in migrations/versions/0020_bulk_runs_and_search.py",
            type(exc.orig).__name__,
        )
        return False
    savepoint.commit()
    return True


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, _table, _column in TRIGRAM:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    op.drop_index("ix_bulk_runs_started_at", table_name="bulk_runs")
    op.drop_table("bulk_runs")
