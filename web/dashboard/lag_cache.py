"""Consumer lag for the Waiting page, never waited on for long.

Asking Kafka takes a while, and with the broker away it takes the client's whole timeout
(5 s). The answer (rows, or the error) is kept for FRESH_S. Past that, a request starts one
refresh in a background thread and waits for it at most WAIT_S; if it has not answered by
then, the page shows the last known answer marked stale (or says that the broker has not
answered yet), and the refresh fills the cache when it ends. So a broker that is away costs
a page at most WAIT_S, once per FRESH_S, and never more than one query runs at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

__all__ = ["FRESH_S", "WAIT_S", "Lag", "LagCache"]

FRESH_S = 10.0
WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Lag:
    rows: list[dict[str, Any]]
    error: str | None
    # Seconds since the answer shown was fetched, when it is older than FRESH_S (a refresh
    # is under way); None when fresh.
    stale_s: float | None = None
    pending: bool = False  # no answer yet: the first query is still running


@dataclass
class _State:
    answer: tuple[list[dict[str, Any]], str | None] | None = None
    at: float = 0.0
    running: threading.Event | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class LagCache:
    def __init__(self, fresh_s: float = FRESH_S, wait_s: float = WAIT_S) -> None:
        self.fresh_s = fresh_s
        self.wait_s = wait_s
        self._states: dict[int, _State] = {}
        self._guard = threading.Lock()

    def _state(self, owner: object) -> _State:
        with self._guard:
            return self._states.setdefault(id(owner), _State())

    async def get(self, owner: object, ask: Callable[[], list[dict[str, Any]]]) -> Lag:
        state = self._state(owner)
        if state.answer is not None and time.monotonic() - state.at < self.fresh_s:
            return Lag(*state.answer)
        done = self._refresh(state, ask)
        await anyio.to_thread.run_sync(done.wait, self.wait_s)
        answer, at = state.answer, state.at
        if answer is None:
            return Lag([], None, pending=True)
        age = time.monotonic() - at
        return Lag(*answer, stale_s=age if age >= self.fresh_s else None)

    def _refresh(self, state: _State, ask: Callable[[], list[dict[str, Any]]]) -> threading.Event:
        """One refresh at a time: the running one's event, or a new one started."""
        with state.lock:
            if state.running is not None:
                return state.running
            done = state.running = threading.Event()

        def run() -> None:
            try:
                found: tuple[list[dict[str, Any]], str | None] = (ask(), None)
            except Exception as exc:  # the broker away is a finding on the page, not a 500
                found = ([], f"{type(exc).__name__}: {str(exc)[:200]}")
            with state.lock:
                state.answer, state.at, state.running = found, time.monotonic(), None
            done.set()

        threading.Thread(target=run, name="dashboard-lag", daemon=True).start()
        return done
