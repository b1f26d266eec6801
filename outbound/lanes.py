"""Runs shared by lanes (ADR 021): the threads that send one endpoint's claimed run.

    run = Run(claimed_run)            # one endpoint's deliveries, in the order to send them
    while (c := run.take()) is not None:
        ...                           # send c; run.halt.set() at one not delivered
    rest = run.rest()                 # what nobody took: given back

A run starts on one lane. An unordered endpoint whose answer took `lane_after_s` or more is
*slow*: waiting, not CPU, paces its run, so the dispatcher opens more lanes on it, up to
`endpoint_concurrency` in all, while threads are free; they take the run's next deliveries
from the same queue. The dispatcher remembers which endpoints answered slowly
(`SlowEndpoints`: for `SLOW_MEMORY_S` after the last slow answer, until a quick one), so a
slow endpoint's next run starts with its lanes rather than after its first answer. A fast
endpoint keeps one lane (more would only add threads taking turns at the GIL: a fast
endpoint's run on four lanes made the benchmark's dispatcher 40% slower). An ordered
endpoint keeps one lane: its run goes out in commit order, one request at a time. Every
delivery is taken by exactly one lane; `rest` drains what is left, once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from outbound.claims import Claimed

__all__ = ["SLOW_MEMORY_S", "Run", "SlowEndpoints"]

# How long an endpoint's slow answer is remembered (a quick answer forgets it at once).
SLOW_MEMORY_S = 300.0


class Run:
    def __init__(self, deliveries: list[Claimed], *, slow: bool = False) -> None:
        """`slow`: the endpoint answered slowly lately (`SlowEndpoints`): the run wants
        more lanes from the start."""
        if not deliveries:
            raise ValueError("a run has at least one delivery")
        self.endpoint_id = deliveries[0].endpoint_id
        # The run's first delivery, sent whatever the lease's time left (just claimed),
        # whichever lane takes it.
        self.first_id = deliveries[0].id
        self.ordered = deliveries[0].ordered
        self.halt = threading.Event()  # set by the lane that met a delivery not delivered
        self.lanes = 0  # lanes opened on it
        self._left = deque(deliveries)
        self._slow = slow and not self.ordered
        self._lock = threading.Lock()

    def take(self) -> Claimed | None:
        """The next delivery to send, None when none is left."""
        with self._lock:
            return self._left.popleft() if self._left else None

    def rest(self) -> list[Claimed]:
        """Every delivery nobody took, now taken (to be given back)."""
        with self._lock:
            rest = list(self._left)
            self._left.clear()
            return rest

    def left(self) -> int:
        with self._lock:
            return len(self._left)

    def open_lane(self) -> None:
        with self._lock:
            self.lanes += 1

    def answered_in(self, seconds: float, lane_after_s: float) -> bool:
        """Note an answer's time; True the first time it makes the run slow (more lanes
        are then wanted: the caller wakes the dispatcher's loop)."""
        with self._lock:
            if self._slow or self.ordered or seconds < lane_after_s:
                return False
            self._slow = True
            return True

    def wants_lane(self, endpoint_concurrency: int) -> bool:
        """Whether another lane would help: slow, unordered, not halted, fewer lanes than
        the endpoint may have, and more deliveries left than lanes to take them."""
        with self._lock:
            return (
                self._slow
                and not self.ordered
                and not self.halt.is_set()
                and self.lanes < endpoint_concurrency
                and len(self._left) > 0
            )


class SlowEndpoints:
    """The endpoints that answered slowly lately, in this dispatcher's memory (a hint for
    the next run's lanes, never a rule: the limits live in the claim and the config)."""

    def __init__(
        self, memory_s: float = SLOW_MEMORY_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._memory_s = memory_s
        self._monotonic = monotonic
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def answered(self, endpoint_id: str, seconds: float, lane_after_s: float) -> None:
        with self._lock:
            if seconds < lane_after_s:
                self._until.pop(endpoint_id, None)
                return
            now = self._monotonic()
            if len(self._until) >= 10_000:  # bounded: forget what has expired
                self._until = {k: t for k, t in self._until.items() if t > now}
            self._until[endpoint_id] = now + self._memory_s

    def is_slow(self, endpoint_id: str) -> bool:
        with self._lock:
            until = self._until.get(endpoint_id)
            return until is not None and until > self._monotonic()
