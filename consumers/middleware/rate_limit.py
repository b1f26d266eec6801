"""Option `rate_limit` (messages per second per worker process; default None: no limit).

A token bucket per job: an attempt waits until a token is free. Per process, not global:
N worker processes run at most N times the rate.
"""

from __future__ import annotations

import time

from consumers.attempt_record import Attempt
from consumers.middleware.base import Middleware, MiddlewareEnv

__all__ = ["RateLimit"]


class RateLimit(Middleware):
    def __init__(self, env: MiddlewareEnv) -> None:
        super().__init__(env)
        self._tokens: dict[str, tuple[float, float]] = {}

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
