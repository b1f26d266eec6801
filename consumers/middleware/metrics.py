"""Metrics: handled messages per job and outcome, and how long handlers ran; and, when the
process writes them, the dashboard's per-minute rollups (outbox.rollups).

Counted once the batch's outcome is durable (a rolled-back batch counts nothing), once per
batch and label set: a counter increment per message cost more than the job itself.

A rollup's wait is from the message's commit to its handler's start: the later of its
CloudEvents time (the outbox row's creation), the time a retry or replay copy was made
(`x-copied-at`) and its not-before time (a delayed or retried message is not late while it
waits for its time).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from consumers.headers import Headers
from consumers.middleware.base import Attempt, Line, Middleware
from outbox.rollups import Sample

__all__ = ["Metrics", "wait_origin"]

_ROLLED = {"processed": "handled", "failed": "failed", "retry_scheduled": "retried"}


def wait_origin(headers: Mapping[str, str], not_before: datetime | None) -> float | None:
    """When a message became due, in epoch seconds; None when its headers say nothing
    readable (then no wait is recorded for it)."""
    found: list[float] = []
    for name in ("ce_time", Headers.COPIED_AT):
        value = headers.get(name)
        if value:
            try:
                stamp = datetime.fromisoformat(value)
            except ValueError:
                continue
            if stamp.tzinfo is not None:
                found.append(stamp.timestamp())
    if not found:
        return None
    if not_before is not None:
        found.append(not_before.timestamp())
    return max(found)


class Metrics(Middleware):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}
        self._waits: dict[tuple[str, str], float] = {}  # (job, event id) -> wait ms

    def start(self, attempt: Attempt) -> None:
        if self.env.metrics.rollups is None:
            return
        inc = attempt.incoming
        origin = wait_origin(inc.headers, inc.not_before)
        if origin is not None:
            self._waits[(attempt.job.name, inc.event_id)] = (time.time() - origin) * 1000

    def batch_discarded(self) -> None:
        self._waits.clear()

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
        self._roll_up(lines)

    def _roll_up(self, lines: Sequence[Line]) -> None:
        rollups = self.env.metrics.rollups
        if rollups is None:
            return
        group = self.env.group.name
        waits, self._waits = self._waits, {}
        for line in lines:
            field = _ROLLED.get(line["outcome"])
            if field is None or not line["job"]:
                continue  # a duplicate, a locked job or poison: no handler ran
            sample = Sample(
                handled=field == "handled",
                failed=field == "failed",
                retried=field == "retried",
                wait_ms=waits.get((line["job"], line["event_id"])),
                run_ms=line["duration_ms"],
            )
            rollups.job(group, line["job"], sample)

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
