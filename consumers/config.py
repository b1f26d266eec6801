"""A worker's settings and what it counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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
    # The longest the broker holds a fetch that found nothing new (fetch.max.wait.ms). Apache
    # Kafka answers as soon as a record arrives; the embedded broker holds it this long
    # whatever arrives, so it bounds commit -> job start there; lower costs an idle worker
    # CPU in fetch round trips (ADR 020).
    fetch_max_wait_ms: int = 500
    # Delayed retries held in memory; past this, the retry partitions pause.
    delayed_cap: int = 10_000
    client_id: str = "outbox-consumer"
    # The Kafka client: kafka-python, or confluent (consumers.source_choice, ADR 019).
    kafka_client: str = "kafka-python"
    # confluent only: a supervised slot's stable group.instance.id (static membership), and
    # the group protocol: auto (KIP-848 where the broker offers it), consumer or classic.
    group_instance_id: str | None = None
    group_protocol: str = "auto"
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

    def count(self, lines: Iterable[Mapping[str, Any]], *, ignored: int) -> None:
        """A batch whose outcome is durable: its `job_handled` lines by outcome."""
        self.batches += 1
        self.ignored += ignored
        counts = Counter(line["outcome"] for line in lines)
        self.processed += counts["processed"]
        self.duplicates += counts["duplicate"]
        self.retries += counts["retry_scheduled"]
        self.failed += counts["failed"]
