"""Options `tries` (default 3) and `backoff` (default exponential from 10 s).

A failed attempt that has tries left is written to the group's retry topic with an
`x-not-before` time from the back-off; the last one (or a permanent failure, see
consumers.errors, or poison) goes to failed_jobs and the group's DLQ. Both are outbox rows
in the transaction that records the attempt, so the failure is recorded exactly when the
offset moves past it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import Connection

from consumers import store
from consumers.failures import record_failure, schedule_retry
from consumers.job import Backoff, Job, exponential
from consumers.middleware.base import Attempt, Middleware

__all__ = ["MAX_TRIES", "Retries", "longest_backoff"]

# An x-attempt header beyond this is forged (and would overflow the inbox's counter).
MAX_TRIES = 1000


def _steps(job_name: str, delays: Sequence[Any]) -> Backoff:
    """Fixed steps, the last repeated: (60, 120) waits 60 s, then 120 s, 120 s..."""
    if not delays:
        raise ValueError(f"job {job_name!r}: a backoff needs at least one delay")
    for delay in delays:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise ValueError(f"job {job_name!r}: backoff delays are seconds, not {delay!r}")
        if not 0 <= delay < math.inf:
            raise ValueError(f"job {job_name!r}: backoff delays are >= 0 and finite")
    steps = tuple(float(d) for d in delays)
    return lambda attempt: steps[min(attempt, len(steps)) - 1]


def longest_backoff(job: Job) -> float:
    """The longest wait between two of the job's attempts: a retry's `x-not-before` can
    never honestly be further away than this."""
    backoff = job.option("backoff")
    return max((backoff(n) for n in range(1, job.option("tries") + 1)), default=0.0)


class Retries(Middleware):
    options: ClassVar[dict[str, Any]] = {"tries": 3, "backoff": None}

    @classmethod
    def prepare(cls, job_name: str, options: dict[str, Any], transactional: bool) -> None:
        tries = options["tries"]
        if isinstance(tries, bool) or not isinstance(tries, int) or not 1 <= tries <= MAX_TRIES:
            raise ValueError(f"job {job_name!r}: tries must be an integer from 1 to {MAX_TRIES}")
        backoff = options["backoff"]
        if backoff is None:
            options["backoff"] = exponential()
        elif not callable(backoff):
            if isinstance(backoff, str | bytes) or not isinstance(backoff, Sequence):
                raise ValueError(f"job {job_name!r}: backoff is steps like (60, 120) or a callable")
            options["backoff"] = _steps(job_name, backoff)

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
        if attempt.final:
            record_failure(
                conn,
                group,
                inc,
                declared,
                reason=attempt.reason,
                error=error,
                message=attempt.message or type(error).__name__,
                now=attempt.now,
                shards=self.env.shards,
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
        )
