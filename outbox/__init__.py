"""The transactional outbox: table, envelope and the writer used inside a unit of work.

Never imports `domain`: it moves opaque, typed envelopes.
"""

from outbox.bulk_runs import bulk_runs_table
from outbox.envelope import Envelope, canonical_json, shard_for
from outbox.notify import WAKEUP_CHANNEL, notify
from outbox.schema import (
    OutboxStatus,
    ReplayStatus,
    audit_log_table,
    failed_jobs_table,
    inbox_table,
    is_missing_schema,
    job_batches_table,
    job_locks_table,
    metadata,
    outbox_table,
    parked_keys_table,
    relay_instances_table,
    relay_leases_table,
    replays_table,
)
from outbox.schema_dashboard import dashboard_login_limits_table, dashboard_sessions_table
from outbox.schema_rollups import rollups_table
from outbox.schema_webhooks import (
    webhook_attempts_table,
    webhook_deliveries_table,
    webhook_endpoints_table,
)
from outbox.writer import append, outbox_rows

__all__ = [
    "WAKEUP_CHANNEL",
    "Envelope",
    "OutboxStatus",
    "ReplayStatus",
    "append",
    "audit_log_table",
    "bulk_runs_table",
    "canonical_json",
    "dashboard_login_limits_table",
    "dashboard_sessions_table",
    "failed_jobs_table",
    "inbox_table",
    "is_missing_schema",
    "job_batches_table",
    "job_locks_table",
    "metadata",
    "notify",
    "outbox_rows",
    "outbox_table",
    "parked_keys_table",
    "relay_instances_table",
    "relay_leases_table",
    "replays_table",
    "rollups_table",
    "shard_for",
    "webhook_attempts_table",
    "webhook_deliveries_table",
    "webhook_endpoints_table",
]
