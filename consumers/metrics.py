"""Prometheus metrics of a consumer worker (one registry per worker, served by the CLI)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from outbox.rollups import Rollups

__all__ = ["ConsumerMetrics"]


class ConsumerMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, rollups: Rollups | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        # The dashboard's per-minute rollups (outbox.rollups), when the process writes them.
        self.rollups = rollups
        self.handled = Counter(
            "outbox_consumer_handled_total",
            "Messages handled per job, by outcome "
            "(processed, duplicate, retry_scheduled, failed, locked)",
            ["group", "job", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "outbox_consumer_job_duration_seconds",
            "Time a job's handler ran",
            ["group", "job"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
        )
        self.lag = Gauge(
            "outbox_consumer_lag",
            "Messages behind the partition's high watermark",
            ["group", "topic", "partition"],
            registry=self.registry,
        )
        self.assigned = Gauge(
            "outbox_consumer_assigned_partitions",
            "Partitions assigned to this worker",
            ["group"],
            registry=self.registry,
        )
        self.stalled = Counter(
            "outbox_consumer_stalled_total",
            "Times the worker found itself stalled (unassigned, no progress) and left",
            ["group", "reason"],
            registry=self.registry,
        )
        self.reused_ids = Counter(
            "outbox_consumer_reused_event_ids_total",
            "Records whose event id was handled before with a different payload (not run)",
            ["group"],
            registry=self.registry,
        )
        self.failed_jobs = Gauge(
            "outbox_consumer_failed_jobs",
            "Rows in failed_jobs for the group",
            ["group"],
            registry=self.registry,
        )
