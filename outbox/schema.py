"""The outbox table. Migrations in migrations/versions mirror this definition."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from outbox.types import BigId, LongText, UTCDateTime

__all__ = [
    "OutboxStatus",
    "is_missing_schema",
    "metadata",
    "outbox_table",
    "relay_instances_table",
    "relay_leases_table",
]

metadata = MetaData()


class OutboxStatus:
    """Life of an outbox row: pending -> published, or pending -> dead (never sendable)."""

    PENDING = "pending"
    PUBLISHED = "published"
    DEAD = "dead"
    PARKED = "parked"
    ALL = (PENDING, PUBLISHED, DEAD, PARKED)


outbox_table = Table(
    "outbox",
    metadata,
    # Global order of announcements; the relay claims in id order per shard.
    Column("id", BigId, primary_key=True, autoincrement=True),
    # Not unique here: a replay re-publishes an event as a new row with the same event_id.
    # The event store's domain_events.event_id is the unique one.
    Column("event_id", String(36), nullable=False),
    Column("topic", String(249), nullable=False),
    # The aggregate id: Kafka key, so one aggregate's events share a partition and stay ordered.
    Column("key", String(255), nullable=False),
    Column("shard", Integer, nullable=False),
    Column("type", String(255), nullable=False),
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
    Column("instance_id", String(128), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
)

relay_leases_table = Table(
    "relay_leases",
    metadata,
    Column("shard", Integer, primary_key=True, autoincrement=False),
    # NULL when released; a lease is held while owner is set and expires_at is in the future.
    Column("owner", String(128), nullable=True),
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
