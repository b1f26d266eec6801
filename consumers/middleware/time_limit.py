"""Option `timeout_s` (default 60): a job running past it gets `JobTimeout`.

A job that timed out is failed (and retried per its tries), and its worker is replaced
once the outcome is recorded: its process may hold a wedged socket, lock or thread.
"""

from __future__ import annotations

from consumers.attempt_record import Attempt
from consumers.context import JobTimeout, TimeLimiter
from consumers.middleware.base import Middleware, MiddlewareEnv

__all__ = ["TimeLimit"]


class TimeLimit(Middleware):
    def __init__(self, env: MiddlewareEnv) -> None:
        super().__init__(env)
        self._limiter = TimeLimiter()

    def start(self, attempt: Attempt) -> None:
        attempt.armed = self._limiter.arm(attempt.job.options["timeout_s"])

    def finish(self, attempt: Attempt) -> None:
        self._limiter.disarm(attempt.armed)

    def classify(self, attempt: Attempt, exc: BaseException) -> tuple[str, str] | None:
        if not isinstance(exc, JobTimeout):
            return None
        attempt.replace_worker = True
        return "timeout", f"ran past its {attempt.job.option('timeout_s'):g} s timeout"
