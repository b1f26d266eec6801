"""Leases follow progress: a relay that holds shards and gets nowhere lets another try.

Progress is a batch with outcomes marked (published, dead, or deferred next to acked
rows), or a claim that found nothing due. A relay without progress for `stall_s` while
other relays are alive steps back: it frees its leases and leaves the live instances, so
the others' shares cover its shards at their next tick; it comes back after a cool-down
(`stall_s`, doubling while it keeps stalling, at most COOL_DOWN_MAX_S). A relay alone keeps
its shards (nobody could do better) and says so in the log. Both times are written to its
`relay_instances` row at every heartbeat, so `outbox coroner` can name a relay that holds
shards with due rows and publishes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

__all__ = ["COOL_DOWN_MAX_S", "Progress"]

COOL_DOWN_MAX_S = 600.0


class Progress:
    def __init__(self, stall_s: float, clock: Callable[[], datetime]) -> None:
        if stall_s <= 0:
            raise ValueError("the stall time must be positive")
        self.stall_s = stall_s
        self._clock = clock
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self.progress_at: datetime = clock()
        self.last_published_at: datetime | None = None
        self.stalls = 0  # step-backs in a row without progress in between
        self._back_at: float | None = None  # monotonic: when a stepped-back relay rejoins
        self._warned_at = 0.0

    def made(self, *, published: bool) -> None:
        """A batch had outcomes (published: some rows were marked), or nothing was due."""
        now = self._clock()
        with self._lock:
            self._since = time.monotonic()
            self.progress_at = now
            if published:
                self.last_published_at = now
                self.stalls = 0

    def stalled_for(self) -> float | None:
        """Seconds without progress once that exceeds `stall_s`, else None."""
        with self._lock:
            idle = time.monotonic() - self._since
        return idle if idle > self.stall_s else None

    def should_warn(self) -> bool:
        """At most once per `stall_s`: a lone stalled relay's log line."""
        now = time.monotonic()
        if now - self._warned_at < self.stall_s:
            return False
        self._warned_at = now
        return True

    def step_back(self) -> float:
        """Record a step-back; returns the cool-down in seconds."""
        with self._lock:
            self.stalls += 1
            cool_down = min(self.stall_s * 2.0 ** min(self.stalls - 1, 10), COOL_DOWN_MAX_S)
            self._back_at = time.monotonic() + cool_down
        return cool_down

    @property
    def standing_by(self) -> bool:
        return self._back_at is not None

    def cool_down_over(self) -> bool:
        with self._lock:
            return self._back_at is not None and time.monotonic() >= self._back_at

    def rejoined(self) -> None:
        """Back among the live instances: the stall clock starts again from now."""
        with self._lock:
            self._back_at = None
            self._since = time.monotonic()
