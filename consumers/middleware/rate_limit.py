"""Option `rate_limit` (messages per second per worker process; default None: no limit).

A token bucket per job: an attempt waits until a token is free. Per process, not global:
N worker processes run at most N times the rate.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from consumers.middleware.base import Attempt, Middleware, MiddlewareEnv, positive

__all__ = ["RateLimit"]


class RateLimit(Middleware):
    options: ClassVar[dict[str, Any]] = {"rate_limit": None}

    def __init__(self, env: MiddlewareEnv) -> None:
        super().__init__(env)
        self._tokens: dict[str, tuple[float, float]] = {}

    @classmethod
    def prepare(cls, job_name: str, options: dict[str, Any], transactional: bool) -> None:
        positive(job_name, "rate_limit", options["rate_limit"], optional=True)

    def before(self, attempt: Attempt) -> None:
        rate = attempt.job.option("rate_limit")
        if not rate:
            return
        name = attempt.job.name
        tokens, at = self._tokens.get(name, (rate, time.monotonic()))
        now = time.monotonic()
        tokens = min(rate, tokens + (now - at) * rate)
        if tokens < 1:
            time.sleep((1 - tokens) / rate)
            now = time.monotonic()
            tokens = 1.0
        self._tokens[name] = (tokens - 1, now)
