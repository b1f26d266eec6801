"""Options `unique_key` (event -> key) and `unique_for_s`: unique jobs.

The dispatching transaction takes a (job, key) lock (`lock_for` gives key and expiry to the
dispatcher); while it holds, a second dispatch is a no-op. Success or final failure of the
job releases the lock that this message's dispatch took (never a later dispatch's).
"""

from __future__ import annotations

from sqlalchemy import Connection

from consumers import store
from consumers.attempt_record import Attempt
from consumers.headers import Headers
from consumers.middleware.base import Middleware
from consumers.options import lock_for

__all__ = ["UniqueLocks", "lock_for"]


class UniqueLocks(Middleware):
    def settled(self, attempt: Attempt, conn: Connection, *, failed: bool) -> None:
        lock_key = attempt.incoming.headers.get(Headers.LOCK)
        if lock_key:
            store.release_lock(conn, attempt.job.name, lock_key, attempt.incoming.event_id)
