"""Batch follow-ups: a member of a fan-out (`x-batch-id`) is counted when it settles, and
the batch's then / catch / finally jobs are dispatched in the same transaction.

No options: membership comes with the message, from `Dispatcher.dispatch_batch`. The row
lock on the batch makes exactly one member see `pending` reach 0.
"""

from __future__ import annotations

from sqlalchemy import Connection

from consumers import store
from consumers.headers import Headers
from consumers.messages import BatchFinished
from consumers.middleware.base import Attempt, Middleware

__all__ = ["BatchFollowUps"]


class BatchFollowUps(Middleware):
    def settled(self, attempt: Attempt, conn: Connection, *, failed: bool) -> None:
        batch_id = attempt.incoming.headers.get(Headers.BATCH)
        if not batch_id:
            return
        progress = store.batch_progress(conn, batch_id, failed=failed, now=attempt.now)
        if progress is None:
            return
        follow_ups = []
        if failed and progress.failed == 1 and progress.catch_job:
            follow_ups.append(progress.catch_job)
        if progress.finished:
            if progress.failed == 0 and progress.then_job:
                follow_ups.append(progress.then_job)
            if progress.finally_job:
                follow_ups.append(progress.finally_job)
        summary = BatchFinished(
            batch_id=batch_id, name=progress.name, total=progress.total, failed=progress.failed
        )
        for name in follow_ups:
            self.env.dispatcher.dispatch(conn, name, summary, key=batch_id)
