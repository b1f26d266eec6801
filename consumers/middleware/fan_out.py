"""Batch follow-ups: a member of a fan-out (`x-batch-id`) is counted when it settles, and
the batch's then / catch / finally jobs are dispatched in the same transaction.

No options: membership comes with the message, from `Dispatcher.dispatch_batch`. The row
lock on the batch makes exactly one member see `pending` reach 0. A round of
`transactional=False` outcomes recorded together (consumers._internal.after_commit) counts
its members
in one statement per batch at the end of the round (`round`), not one per member: the
senders' rounds then hold the batch's row lock for one statement each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection

from consumers import store
from consumers.attempt_record import Attempt
from consumers.headers import Headers
from consumers.messages import BatchFinished
from consumers.middleware.base import Middleware

__all__ = ["BatchFollowUps"]


class BatchFollowUps(Middleware):
    _round: dict[str, list[int]] | None = None  # batch id -> [settled, failed] this round
    _round_now: datetime | None = None

    def settled(self, attempt: Attempt, conn: Connection, *, failed: bool) -> None:
        batch_id = attempt.incoming.headers.get(Headers.BATCH)
        if not batch_id:
            return
        if self._round is not None:
            counts = self._round.setdefault(batch_id, [0, 0])
            counts[0] += 1
            counts[1] += int(failed)
            self._round_now = attempt.now
            return
        self._count(conn, batch_id, 1, int(failed), attempt.now)

    @contextmanager
    def round(self, conn: Connection) -> Iterator[None]:
        """Members settled inside are counted when it ends without an error (in `conn`'s
        transaction); an error discards them with the transaction."""
        self._round, self._round_now = {}, None
        try:
            yield
            counted, now = self._round, self._round_now
            self._round = None
            for batch_id in sorted(counted):  # one lock order for every worker
                settled, failed = counted[batch_id]
                assert now is not None  # noqa: S101 - set with every member counted
                self._count(conn, batch_id, settled, failed, now)
        finally:
            self._round = None

    def _count(
        self, conn: Connection, batch_id: str, settled: int, failed: int, now: datetime
    ) -> None:
        progress = store.batch_progress(conn, batch_id, failed=failed, now=now, settled=settled)
        if progress is None:
            return
        follow_ups = []
        # The first failure of the batch is in this count: its catch job, once.
        if failed and progress.failed == failed and progress.catch_job:
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
