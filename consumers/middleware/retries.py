"""Options `tries` (default 3) and `backoff` (default exponential from 10 s).

A failed attempt that has tries left is written to the group's retry topic with an
`x-not-before` time from the back-off; the last one (or a permanent failure, see
consumers.errors, or poison) goes to failed_jobs and the group's DLQ. Both are outbox rows
in the transaction that records the attempt, so the failure is recorded exactly when the
offset moves past it.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection

from consumers import store
from consumers._internal.failure_records import record_failure, schedule_retry
from consumers.attempt_history import entry, with_attempt
from consumers.attempt_record import Attempt
from consumers.middleware.base import Middleware
from consumers.options import MAX_TRIES, longest_backoff

__all__ = ["MAX_TRIES", "Retries", "longest_backoff"]


class Retries(Middleware):
    def failed(self, attempt: Attempt, conn: Connection) -> None:
        inc, declared = attempt.incoming, attempt.job
        error = attempt.error
        # A permanent failure (a DoNotRetry, a validation error, a business key taken: see
        # consumers.errors) is failed after this attempt, whatever tries are left.
        attempt.final = inc.attempt >= declared.option("tries") or attempt.permanent
        store.set_attempt(
            conn,
            self.env.group.name,
            job_name=declared.name,
            message_id=inc.message_id,
            status=store.InboxStatus.FAILED if attempt.final else store.InboxStatus.RETRYING,
            attempts=inc.attempt,
            now=attempt.now,
        )
        group = self.env.group.group
        took = (attempt.ended or time.perf_counter()) - attempt.began
        message = attempt.message or type(error).__name__
        history = with_attempt(inc.headers, entry(inc.attempt, attempt.now, took, error, message))
        if attempt.final:
            record_failure(
                conn,
                group,
                inc,
                declared,
                reason=attempt.reason,
                error=error,
                message=message,
                now=attempt.now,
                shards=self.env.shards,
                history=history,
            )
            return
        schedule_retry(
            conn,
            group,
            inc,
            declared,
            delay_s=declared.option("backoff")(inc.attempt),
            now=attempt.now,
            shards=self.env.shards,
            history=history,
        )
