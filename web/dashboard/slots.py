"""How many database connections each kind of page may hold at once, so that one slow page
(a lock held on `failed_jobs`, a filter that matches too much) degrades itself and not the
others.

The kind is the path's first segment (`/failed/12` and `/failed/retry` are "failed"); the
sign-in check around every request is "session". A kind holds at most `per_kind` connections;
a request that finds its kind's slots taken waits at most `wait_s` and is then answered 503
(busy), without touching the pool. Each statement is bounded by the engine's own statement
timeout (infra.db_bounded), so a slot is never held for long.

Counters, not asyncio primitives: the app may be driven by more than one event loop (a test
client per test), and a counter behind a thread lock works from any of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from web.errors import Unavailable

__all__ = ["DatabaseSlots", "kind_of"]

T = TypeVar("T")
_POLL_S = 0.02


def kind_of(path: str) -> str:
    first = path.strip("/").split("/", 1)[0]
    return first[:32] or "overview"


class DatabaseSlots:
    def __init__(self, per_kind: int = 2, wait_s: float = 2.0) -> None:
        self.per_kind = per_kind
        self.wait_s = wait_s
        self._taken: dict[str, int] = {}
        self._lock = threading.Lock()

    def _take(self, kind: str) -> bool:
        with self._lock:
            if self._taken.get(kind, 0) >= self.per_kind:
                return False
            self._taken[kind] = self._taken.get(kind, 0) + 1
            return True

    def _give_back(self, kind: str) -> None:
        with self._lock:
            self._taken[kind] = max(0, self._taken.get(kind, 0) - 1)

    def taken(self, kind: str) -> int:
        with self._lock:
            return self._taken.get(kind, 0)

    async def run(self, kind: str, work: Callable[[], T]) -> T:
        """`work` in a worker thread once a slot of its kind is free (503 past `wait_s`)."""
        deadline = time.monotonic() + self.wait_s
        while not self._take(kind):
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"{self.per_kind} requests for this page are already waiting for the "
                    "database; nothing was done, try again in a moment"
                )
            await anyio.sleep(_POLL_S)
        try:
            return await anyio.to_thread.run_sync(work)
        finally:
            self._give_back(kind)
