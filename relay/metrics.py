"""Prometheus metrics of a relay process (served on `outbox relay --metrics-port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from outbox.rollups import Rollups

__all__ = ["RelayMetrics"]

# Commit -> ack: milliseconds when idle, seconds under a backlog, minutes in an outage.
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class RelayMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, rollups: Rollups | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        # The dashboard's per-minute rollups per topic (outbox.rollups), when written.
        self.rollups = rollups
        r = self.registry
        self.published = Counter("outbox_published", "Outbox rows published and marked", registry=r)
        self.dead = Counter("outbox_dead", "Outbox rows marked dead (never sendable)", registry=r)
        self.send_failures = Counter(
            "outbox_send_failures", "Sends that failed and will be retried", registry=r
        )
        self.fenced = Counter(
            "outbox_fenced_marks", "Acknowledged rows not marked: the lease was lost", registry=r
        )
        self.latency = Histogram(
            "outbox_publish_latency_seconds",
            "From the command's commit (row created_at) to the broker's ack",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backlog = Gauge("outbox_backlog", "Outbox rows by status", ["status"], registry=r)
        self.oldest_pending = Gauge(
            "outbox_oldest_pending_age_seconds", "Age of the oldest pending row", registry=r
        )
        self.leases_held = Gauge(
            "outbox_relay_leases_held", "Shard leases this instance holds", registry=r
        )
        self.instances_alive = Gauge(
            "outbox_relay_instances_alive", "Relay instances with a live heartbeat", registry=r
        )
