"""Options `unique_key` (event -> key) and `unique_for_s`: unique jobs.

The dispatching transaction takes a (job, key) lock (`lock_for` gives key and expiry to the
dispatcher); while it holds, a second dispatch is a no-op. Success or final failure of the
job releases the lock that this message's dispatch took (never a later dispatch's).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Connection

from consumers import store
from consumers.headers import Headers
from consumers.job import Job
from consumers.middleware.base import Attempt, Middleware, positive
from domain.events import DomainEvent

__all__ = ["UniqueLocks", "lock_for"]


def lock_for(job: Job, message: DomainEvent, now: datetime) -> tuple[str, datetime] | None:
    """(lock key, expiry) for dispatching `message` to a unique job; None if not unique."""
    key_of = job.option("unique_key")
    if key_of is None:
        return None
    return key_of(message), now + timedelta(seconds=job.option("unique_for_s"))


class UniqueLocks(Middleware):
    options: ClassVar[dict[str, Any]] = {"unique_key": None, "unique_for_s": None}

    @classmethod
    def prepare(cls, job_name: str, options: dict[str, Any], transactional: bool) -> None:
        if (options["unique_key"] is None) != (options["unique_for_s"] is None):
            raise ValueError(f"job {job_name!r}: give unique_key and unique_for_s together")
        if options["unique_key"] is not None and not callable(options["unique_key"]):
            raise ValueError(f"job {job_name!r}: unique_key is a function of the event")
        positive(job_name, "unique_for_s", options["unique_for_s"], optional=True)

    def settled(self, attempt: Attempt, conn: Connection, *, failed: bool) -> None:
        lock_key = attempt.incoming.headers.get(Headers.LOCK)
        if lock_key:
            store.release_lock(conn, attempt.job.name, lock_key, attempt.incoming.event_id)
