"""Metrics: handled messages per job and outcome, and how long handlers ran.

Counted once the batch's outcome is durable (a rolled-back batch counts nothing), once per
batch and label set: a counter increment per message cost more than the job itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from consumers.middleware.base import Line, Middleware

__all__ = ["Metrics"]


class Metrics(Middleware):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}

    def committed(self, lines: Sequence[Line]) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        reused = 0
        for line in lines:
            job_name = line["job"] or "-"
            counts[(job_name, line["outcome"])] += 1
            reused += line.get("reason") == "reused_id"
            if line["outcome"] == "processed":
                self._timer(job_name).observe(line["duration_ms"] / 1000)
        for key, n in counts.items():
            self._counter(*key).inc(n)
        if reused:
            self.env.metrics.reused_ids.labels(self.env.group.name).inc(reused)

    def _counter(self, job_name: str, outcome: str) -> Any:
        key = (job_name, outcome)
        if key not in self._counters:
            group = self.env.group.name
            self._counters[key] = self.env.metrics.handled.labels(group, *key)
        return self._counters[key]

    def _timer(self, job_name: str) -> Any:
        if job_name not in self._timers:
            group = self.env.group.name
            self._timers[job_name] = self.env.metrics.duration.labels(group, job_name)
        return self._timers[job_name]
