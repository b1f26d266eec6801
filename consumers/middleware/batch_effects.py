"""Option `apply_batch`: effects a poll batch applies once, in key order, before it commits.

A job whose messages all bump the same few rows (record-interaction bumps a visitor's
counters) holds those row locks from its first message to the end of its batch's
transaction; two workers taking them in different orders deadlock (seen: 59 deadlocks and
a 17 s wait with two analytics workers). With `apply_batch=fn`, the handler only stages
what it would write (`ctx.add_to_batch(key, value)`); the middleware gathers the staged
items of the attempts that succeeded and, just before the batch commits, calls
`fn(conn, items)` once with the items sorted by key. Every worker then takes its locks in
the same order, once per batch, for the few milliseconds before commit. A staged item of an
attempt that failed is dropped with it. Only for transactional jobs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from consumers.attempt_record import Attempt
from consumers.middleware.base import Middleware

__all__ = ["BatchEffects"]


class BatchEffects(Middleware):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._pending: dict[str, tuple[Any, list[tuple[Any, Any]]]] = {}

    def succeeded(self, attempt: Attempt, conn: Connection) -> None:
        apply = attempt.job.option("apply_batch")
        if apply is None or attempt.ctx is None:
            return
        staged = attempt.ctx.staged()
        if staged:
            self._pending.setdefault(attempt.job.name, (apply, []))[1].extend(staged)

    def batch_ending(self, conn: Connection) -> None:
        pending, self._pending = self._pending, {}
        for name in sorted(pending):
            apply, items = pending[name]
            apply(conn, sorted(items, key=lambda item: item[0]))

    def batch_discarded(self) -> None:
        self._pending = {}
