"""Prometheus metrics of a scheduler instance (`outbox scheduler --metrics-port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["SchedulerMetrics"]


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.leader = Gauge(
            "outbox_scheduler_leader",
            "1 while this instance holds the scheduler lease",
            registry=self.registry,
        )
        self.firings = Counter(
            "outbox_scheduler_firings_total",
            "Firings this instance recorded, by outcome (dispatched, locked, missed, fenced)",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.missed_slots = Counter(
            "outbox_scheduler_missed_slots_total",
            "Slots found past their grace time and not fired",
            ["job"],
            registry=self.registry,
        )
        self.last_fired = Gauge(
            "outbox_scheduler_last_fired_timestamp_seconds",
            "When this instance last fired the job (Unix time)",
            ["job"],
            registry=self.registry,
        )
