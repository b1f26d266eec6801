"""tenant profile enrichment: no schema change (a documented no-op)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

The enriched profile (description, tags, profile_source) is stored where the tenant's
profile already lives: the `profile` JSON text of `tenants`, written by the
TenantProfileEnhanced projection (bounded by domain.limits: 50 fields of <= 2,000
characters). Delayed dispatch uses the outbox's existing `available_at`, and failed-job
housekeeping the existing `failed_jobs` and `audit_log` tables. The revision is kept so
that the chain 0008 -> ... -> 0012 stays as the issue 15/16 contract laid it out.
"""

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change (see the module docstring)."""


def downgrade() -> None:
    """Nothing to undo."""
