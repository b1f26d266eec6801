"""The runtime's tables: the outbox and what the relay, the consumer runtime, the scheduler
and the incident tooling keep (leases, inbox, failed jobs, batches, parked keys, replays,
the audit log...). Migrations in migrations/versions mirror these definitions."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Boolean, Column, Index, Integer, MetaData, String, Table, Text, false
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StatementError,
)

from outbox.types import BigId, ExactString, LongText, UTCDateTime

__all__ = [
    "OutboxStatus",
    "ReplayStatus",
    "audit_log_table",
    "failed_job_retries_table",
    "failed_jobs_table",
    "inbox_table",
    "is_missing_schema",
    "job_batches_table",
    "job_locks_table",
    "metadata",
    "outbox_table",
    "parked_keys_table",
    "relay_instances_table",
    "relay_leases_table",
    "replays_table",
    "scheduler_firings_table",
    "scheduler_leader_table",
    "worker_heartbeats_table",
]

metadata = MetaData()


class OutboxStatus(StrEnum):
    """Life of an outbox row: pending -> published, or pending -> dead (never sendable)."""

    PENDING = "pending"
    PUBLISHED = "published"
    DEAD = "dead"
    PARKED = "parked"


class ReplayStatus(StrEnum):
    """Life of a replay: running while copies are inserted, then done or interrupted."""

    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"


# PostgreSQL: partitioned by RANGE (id) (migration 0015, ADR 013), so that prune empties
# whole partitions with TRUNCATE; `outbox.partitions` makes them at run time, so they are not
# in this metadata. SQLite and MySQL/MariaDB: a plain table.
outbox_table = Table(
    "outbox",
    metadata,
    # Global order of announcements; the relay claims in id order per shard.
    Column("id", BigId, primary_key=True, autoincrement=True),
    # Not unique here: a replay re-publishes an event as a new row with the same event_id.
    # The event store's domain_events.event_id is the unique one.
    Column("event_id", ExactString(36), nullable=False),
    Column("topic", ExactString(249), nullable=False),
    # The aggregate id: Kafka key, so one aggregate's events share a partition and stay ordered.
    Column("key", ExactString(255), nullable=False),
    Column("shard", Integer, nullable=False),
    Column("type", ExactString(255), nullable=False),
    # JSON text sent to Kafka as-is (byte-exact; decoding it only to re-encode costs 2x).
    Column("payload", LongText, nullable=False),
    Column("headers", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("available_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("status", String(16), nullable=False, server_default=OutboxStatus.PENDING),
    Column("published_at", UTCDateTime(), nullable=True),
    Column("kafka_partition", Integer, nullable=True),
    Column("kafka_offset", BigId, nullable=True),
    # A replay's copy: the original row's id and the replay's id (NULL on original rows).
    Column("replay_of", BigId, nullable=True),
    Column("replay_id", ExactString(36), nullable=True),
    # Every index is a B-tree page written by each command: keep only the ones the relay
    # (claim pending rows of a shard in id order) and the per-key tools need.
    Index("ix_outbox_status_shard_id", "status", "shard", "id"),
    Index("ix_outbox_key_id", "key", "id"),
)


# Relay coordination lives next to the outbox so that the tooling in this package (coroner,
# status) can show who holds a shard without importing the relay.
relay_instances_table = Table(
    "relay_instances",
    metadata,
    # Unique per process start (host, pid and a random suffix): a restarted relay is new.
    Column("instance_id", ExactString(128), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    # The relay's last progress (a batch with outcomes, or nothing due) and last published
    # batch, written at every heartbeat: `outbox coroner` names a relay that holds shards
    # with due rows and gets nowhere (ADR 012). NULL: never (or a relay older than 0014).
    Column("progress_at", UTCDateTime(), nullable=True),
    Column("last_published_at", UTCDateTime(), nullable=True),
)

relay_leases_table = Table(
    "relay_leases",
    metadata,
    Column("shard", Integer, primary_key=True, autoincrement=False),
    # NULL when released; a lease is held while owner is set and expires_at is in the future.
    Column("owner", ExactString(128), nullable=True),
    # Incremented on every acquisition: the fencing token a mark must still match.
    Column("epoch", BigId, nullable=False, server_default="0"),
    Column("expires_at", UTCDateTime(), nullable=True),
)


def is_missing_schema(exc: DBAPIError) -> bool:
    """The database lacks a table or column the code expects: not migrated (`outbox db
    upgrade`), never worth retrying. PostgreSQL and MySQL say so with a ProgrammingError;
    SQLite raises its OperationalError, the same class as "database is locked"."""
    if isinstance(exc, ProgrammingError):
        return True
    return str(exc.orig).startswith(("no such table", "no such column"))


def is_transient(exc: StatementError) -> bool:
    """A connection lost, a server gone, a deadlock, a lock timeout: trying again may work.
    Anything else the database refused (a missing table, a value out of range, too long, a
    NUL) fails the same way again. The relay and the consumers both ask this."""
    if isinstance(exc, DBAPIError) and is_missing_schema(exc):
        return False
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


# Consumer-runtime bookkeeping lives here too, for the same reason: prune, coroner and status
# read it without importing `consumers`. The runtime in `consumers/` is the only writer.

inbox_table = Table(
    "inbox",
    metadata,
    # One row per (group, job, message): the consumer's record that the job ran, or how its
    # attempts went. Renaming a group or a job re-runs its effects: the key changes.
    Column("group_name", ExactString(100), primary_key=True),
    Column("job_name", ExactString(100), primary_key=True),
    # The event id; `event_id/replay_id` for a replay that asked consumers to re-run effects.
    Column("message_id", ExactString(80), primary_key=True),
    # done: the effect is committed. retrying / failed: attempts so far, so a redelivered
    # attempt (crash between commit and offset commit) does not start a second retry chain.
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("processed_at", UTCDateTime(), nullable=False),
    # A digest of the record's value: the same event id arriving with another payload is a
    # reused id (a producer's bug, or forged), not a duplicate to skip silently.
    Column("payload_digest", String(32), nullable=True),
    # The tenant the message was for (its tenant_id header): the dashboard's jobs search.
    Column("tenant_id", ExactString(64), nullable=True),
    Index("ix_inbox_processed_at", "processed_at"),
    Index("ix_inbox_tenant_processed_at", "tenant_id", "processed_at"),
)

failed_jobs_table = Table(
    "failed_jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("group_name", ExactString(100), nullable=False),
    # NULL when no job could be chosen (undecodable payload, unknown event type).
    Column("job_name", ExactString(100), nullable=True),
    Column("event_id", ExactString(80), nullable=True),
    Column("type", ExactString(255), nullable=True),
    Column("topic", ExactString(249), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigId, nullable=False),
    Column("message_key", ExactString(255), nullable=True),
    # The record value as text; base64 when it was not UTF-8 (payload_encoding says which).
    Column("payload", LongText, nullable=False),
    Column("payload_encoding", String(8), nullable=False, server_default="utf-8"),
    Column("headers", Text, nullable=False),
    # exception | timeout | undecodable | unknown_type | invalid_schema | too_large
    Column("reason", String(32), nullable=False),
    Column("exception_class", String(255), nullable=True),
    Column("exception_message", Text, nullable=True),
    Column("traceback", LongText, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("failed_at", UTCDateTime(), nullable=False),
    # The tenant the message was for (its tenant_id header), for the dashboard's search.
    Column("tenant_id", ExactString(64), nullable=True),
    Index("ix_failed_jobs_group_id", "group_name", "id"),
    # The dashboard's filters and searches (ADR 011): newest first within a job or an
    # exception class, and a lookup by event id or key. Failed rows are few writes.
    Index("ix_failed_jobs_job_id", "job_name", "id"),
    Index("ix_failed_jobs_exception_id", "exception_class", "id"),
    Index("ix_failed_jobs_event_id", "event_id"),
    Index("ix_failed_jobs_message_key", "message_key"),
    Index("ix_failed_jobs_tenant_id", "tenant_id", "id"),
)

job_locks_table = Table(
    "job_locks",
    metadata,
    # A unique job's lock, taken in the transaction that dispatches it; a second dispatch
    # while it holds is a no-op. Released when the job succeeds or fails for good.
    Column("job_name", ExactString(100), primary_key=True),
    Column("lock_key", ExactString(255), primary_key=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("message_id", ExactString(80), nullable=False),
)

job_batches_table = Table(
    "job_batches",
    metadata,
    Column("id", ExactString(36), primary_key=True),
    Column("name", ExactString(255), nullable=False),
    Column("group_name", ExactString(100), nullable=False),
    Column("total", Integer, nullable=False),
    Column("pending", Integer, nullable=False),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    # Follow-up jobs dispatched with the batch's summary: then (all succeeded), catch (first
    # failure), finally (all done either way).
    Column("then_job", ExactString(100), nullable=True),
    Column("catch_job", ExactString(100), nullable=True),
    Column("finally_job", ExactString(100), nullable=True),
    Index("ix_job_batches_finished_at", "finished_at"),
)


# An operator's `outbox failed retry`: the failed row goes, this ticket stays. A retry copy's
# x-failed-job-id is honoured (the job may re-send what an earlier attempt left unknown) only
# when its ticket exists for that group, job and event and is still `retrying`; the first
# attempt that honours it makes it `honoured` (consumers/retry_tickets.py, migration 0016).
failed_job_retries_table = Table(
    "failed_job_retries",
    metadata,
    Column("failed_job_id", BigId, primary_key=True, autoincrement=False),
    Column("group_name", ExactString(100), nullable=False),
    Column("job_name", ExactString(100), nullable=True),
    Column("event_id", ExactString(80), nullable=True),
    Column("status", String(16), nullable=False),  # retrying | honoured
    Column("retried_at", UTCDateTime(), nullable=False),
    Column("honoured_at", UTCDateTime(), nullable=True),
    # The prune job removes old tickets by age.
    Index("ix_failed_job_retries_retried_at", "retried_at"),
)


# Incident tooling (outbox coroner / park / skip / requeue / replay / prune): what the
# operators did and what the relay must hold back.

parked_keys_table = Table(
    "parked_keys",
    metadata,
    # The relay's claim skips every row of a parked key, also rows committed after the park.
    Column("key", ExactString(255), primary_key=True),
    Column("parked_at", UTCDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=True),
)

audit_log_table = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    # Who: --actor or the OS user.
    Column("actor", String(128), nullable=False),
    # park | release | skip | requeue | replay | prune
    Column("action", ExactString(32), nullable=False),
    # What it acted on: "key:K", "message:ID", "replay:R", "outbox".
    Column("target", ExactString(300), nullable=False),
    Column("reason", Text, nullable=True),
    # JSON object: counts, filters, previous status... (never payloads).
    Column("details", Text, nullable=False),
)

replays_table = Table(
    "replays",
    metadata,
    Column("id", ExactString(36), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=True),
    # The selection as JSON (ids, times, topics, types, aggregate type, key, statuses).
    Column("filter", Text, nullable=False),
    Column("count", Integer, nullable=False, server_default="0"),
    # Ids of the first and last original row replayed.
    Column("first_id", BigId, nullable=True),
    Column("last_id", BigId, nullable=True),
    # Ids of the first and last copy: prune finds an open replay's copies by primary key.
    Column("copies_first_id", BigId, nullable=True),
    Column("copies_last_id", BigId, nullable=True),
    # Consumers run effects again for this replay (x-replay-rerun header).
    Column("rerun", Boolean, nullable=False),
    # running while copies are being inserted; done after.
    Column("status", String(16), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
)


# The scheduler (scheduler/): who leads, and which (job, slot) pairs have fired. Here, like the
# relay's leases, so that status and coroner show them without importing the scheduler.

scheduler_leader_table = Table(
    "scheduler_leader",
    metadata,
    # One row per independent schedule ("default"); only its holder fires.
    Column("name", ExactString(64), primary_key=True),
    # NULL when released; held while owner is set and expires_at is in the future.
    Column("owner", ExactString(128), nullable=True),
    # Incremented on every take-over: a firing commits only while it still matches.
    Column("epoch", BigId, nullable=False, server_default="0"),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("acquired_at", UTCDateTime(), nullable=True),
)

scheduler_firings_table = Table(
    "scheduler_firings",
    metadata,
    # The unique (job, slot): a slot fires once even if two instances both believe they lead.
    Column("job", ExactString(100), primary_key=True),
    # The trigger time this firing stands for (UTC); `outbox schedule run` uses the moment.
    Column("slot", UTCDateTime(), primary_key=True),
    Column("fired_at", UTCDateTime(), nullable=False),
    Column("owner", ExactString(128), nullable=False),
    # dispatched: its message is in the outbox. locked: a unique job's lock held, nothing sent.
    Column("outcome", String(16), nullable=False),
    Column("message_id", ExactString(36), nullable=True),
    # Earlier slots this firing stands for (missed while no scheduler ran, within grace).
    Column("coalesced", Integer, nullable=False, server_default="0"),
    # An operator's `outbox schedule run` (actor), not a slot of the trigger.
    Column("manual", Boolean, nullable=False, server_default=false()),
    Column("actor", String(128), nullable=True),
    Column("params", Text, nullable=True),
)


# What each consumer worker runs now (the dashboard's "running now"), written by the worker's
# heartbeat thread every few seconds, never on the message path. A row whose heartbeat is
# older than a few intervals belongs to a worker that died without removing it.
worker_heartbeats_table = Table(
    "worker_heartbeats",
    metadata,
    # host:pid:random, new for every process start.
    Column("worker_id", ExactString(128), primary_key=True),
    Column("group_name", ExactString(100), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    # The job running now (NULL between jobs), its message and when it started.
    Column("job_name", ExactString(100), nullable=True),
    Column("message_id", ExactString(80), nullable=True),
    Column("message_key", ExactString(255), nullable=True),
    Column("job_started_at", UTCDateTime(), nullable=True),
    # Jobs handled since the worker started, and its last few (JSON list: job, event_id,
    # outcome, attempt, duration_ms, at), so completed jobs show their durations.
    Column("handled", BigId, nullable=False, server_default="0"),
    Column("recent", Text, nullable=False),
)
