"""`outbox scheduler`: APScheduler wakes the process at each slot; the lease decides who fires.

Every instance runs the same APScheduler jobs: the lease renewal every ttl/3 and one job
per schedule entry on its own trigger. At a slot every instance wakes, and only the lease
holder's firing commits. APScheduler's own misfire handling is off (run however late,
coalesced): `Scheduler.fire_due` decides from the database what is late, missed or already
fired, so the rules hold across restarts and fail-overs, which an in-memory job store forgets.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.core import Scheduler

__all__ = ["ScheduleRunner"]

log = structlog.get_logger(__name__)


class ScheduleRunner:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        # One scheduler operation at a time: a firing and a lease renewal never interleave.
        self._lock = threading.Lock()
        self._aps: Any = None
        self._stopped = threading.Event()

    def start(self) -> None:
        aps = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        aps.add_job(
            self._heartbeat,
            IntervalTrigger(seconds=self.scheduler.lease.interval_s, timezone=UTC),
            id="scheduler-lease",
            name="leader lease",
            next_run_time=datetime.now(UTC),
        )
        for entry in self.scheduler.entries.values():
            aps.add_job(self._fire, entry.trigger, args=[entry.job], id=entry.job, name=entry.job)
        aps.start()
        self._aps = aps
        log.info(
            "scheduler_started",
            owner=self.scheduler.owner,
            jobs=sorted(self.scheduler.entries),
            lease_ttl_s=self.scheduler.lease.ttl.total_seconds(),
        )

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def stop(self) -> None:
        """Finish a firing in progress, then give the lease up so a standby takes over."""
        if self._aps is not None:
            self._aps.shutdown(wait=True)
            self._aps = None
        with self._lock:
            try:
                self.scheduler.lease.release()
            except Exception as exc:
                log.warning("scheduler_release_failed", error=str(exc)[:300])
        self._stopped.set()
        log.info("scheduler_stopped", owner=self.scheduler.owner)

    def _heartbeat(self) -> None:
        with self._lock:
            try:
                self.scheduler.heartbeat()
            except Exception as exc:
                log.warning("scheduler_heartbeat_failed", error=str(exc)[:300])

    def _fire(self, job: str) -> None:
        with self._lock:
            try:
                self.scheduler.fire_due(job)
            except Exception as exc:
                log.error("scheduler_firing_failed", job=job, error=str(exc)[:300])
