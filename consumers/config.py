"""A worker's settings and what it counted."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WorkerConfig", "WorkerStats"]


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap_servers: str
    shards: int
    max_poll_records: int = 500
    poll_timeout_ms: int = 500
    max_payload_bytes: int = 1024 * 1024
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # A batch stops early (and the rest is fetched again) after half of this, so a slow
    # batch never costs the worker its group membership.
    max_poll_interval_ms: int = 300_000
    # Delayed retries held in memory; past this, the retry partitions pause.
    delayed_cap: int = 10_000
    client_id: str = "outbox-consumer"
    metrics_interval_s: float | None = None
    # Unassigned, or no progress while behind, for this long: leave and exit to be replaced.
    liveness_timeout_s: float = 120.0
    liveness_check_s: float = 5.0
    # A worker process (not a thread) also ends itself when its loop stops coming round.
    exit_when_blocked: bool = False
    # Seconds between the worker's heartbeat rows (worker_heartbeats, the dashboard's
    # "running now"); None writes none.
    heartbeat_s: float | None = 2.0


@dataclass
class WorkerStats:
    processed: int = 0
    duplicates: int = 0
    retries: int = 0
    failed: int = 0
    ignored: int = 0
    batches: int = 0
    # stopped | replace (a job timed out) | stalled (the liveness check): start a fresh one
    exit_reason: str = "stopped"
