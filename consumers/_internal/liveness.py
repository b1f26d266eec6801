"""A worker watches its own progress, so that a wedged member is replaced without help.

Seen on PostgreSQL with the embedded broker: after member churn during a broker pause, a
group stayed "Unknown" with stale members for 14 minutes, every worker inside kafka-python's
group join, nothing logged, until a person deleted the group. On Apache Kafka a worker that
joined right after its topics were created stayed unassigned. A fresh member fixes both, so
a worker that notices it is not doing its job leaves the group and exits; its supervisor
starts a fresh one.

The worker is stalled, after `timeout_s`:

* **unassigned**: no partition, although the group does not have more members than its
  topics have partitions (then being idle is right, and nothing happens). Alone in its
  group, or with members of a group that has not been Stable all that time, the worker
  also re-forms the group when it leaves (consumers._internal.group_reform): the embedded broker's
  coordinator can wedge so that no member of that group is ever assigned again;
* **rebalancing**: (re)joining the group all that time, still holding the partitions of
  its last generation (so it does not look unassigned, and its lag may be nil while the
  partitions nobody holds pile up). Alone in the group this is the same wedge as above;
  with others it may be a legitimate wait for a member finishing a batch, so it is only
  acted on after the timeout plus the longest such wait (the loop grace below);
* **no progress**: partitions with lag (or records waiting in the worker), and not one
  record handled or committed meanwhile;
* **loop blocked**: the loop itself has not come round (a poll that never returns). Only a
  thread can see that; it waits longer (the timeout plus the poll interval a rebalance may
  legitimately take) and then ends the process, as nothing else can get it out.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from consumers.source import GroupState

__all__ = ["EXIT_REPLACE", "Liveness", "Stalled"]

log = structlog.get_logger("consumers._internal.liveness")

# The exit code of a worker process that wants to be replaced (see pipeline.supervisor).
EXIT_REPLACE = 75


@dataclass(frozen=True)
class Stalled:
    reason: str  # unassigned | rebalancing | no_progress | loop_blocked
    detail: str
    # Whether to re-form the group on leaving (a fresh member would not fare better: a
    # wedged coordinator): "alone" when the broker lists no other member, "stuck" when it
    # lists others but the group has not been Stable all that time; None otherwise.
    reform: str | None = None


def _reform(state: GroupState | None) -> str | None:
    if state is None or state.partitions <= 0:
        return None
    if state.members <= 1:
        return "alone"
    return "stuck" if state.state not in ("Stable", "Empty") else None


class Liveness:
    def __init__(
        self,
        group: str,
        timeout_s: float,
        *,
        loop_grace_s: float,
        clock: Callable[[], float] = time.monotonic,
        hard_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.group = group
        self.timeout_s = timeout_s
        self.loop_grace_s = loop_grace_s
        self._clock = clock
        self._hard_exit = hard_exit
        now = clock()
        self._progress_at = now
        self._loop_at = now
        self._unassigned_since: float | None = now
        self._rebalancing_since: float | None = None
        self._watch: threading.Thread | None = None
        self._done = threading.Event()

    # -- what the loop reports -------------------------------------------------------------

    def looped(self) -> None:
        self._loop_at = self._clock()

    def progressed(self) -> None:
        self._progress_at = self._clock()

    def rebalancing(self, now_rebalancing: bool) -> None:
        if not now_rebalancing:
            self._rebalancing_since = None
        elif self._rebalancing_since is None:
            self._rebalancing_since = self._clock()

    def assignment(self, partitions: int) -> None:
        if partitions and self._unassigned_since is not None:
            self._unassigned_since = None
            self._progress_at = self._clock()  # a new assignment starts the count afresh
        elif not partitions and self._unassigned_since is None:
            self._unassigned_since = self._clock()

    # -- the verdict -----------------------------------------------------------------------

    def check(self, lag: int, group_state: Callable[[], GroupState | None]) -> Stalled | None:
        """Called by the loop every few seconds; a verdict the loop acts on."""
        now = self._clock()
        if self._unassigned_since is not None:
            idle = now - self._unassigned_since
            if idle < self.timeout_s:
                return None
            state = group_state()
            if state is not None and state.state == "Stable" and state.members > state.partitions:
                self._unassigned_since = now  # a spare member: look again later
                log.info(
                    "consumer_idle_spare_member",
                    group=self.group,
                    members=state.members,
                    partitions=state.partitions,
                )
                return None
            described = (
                f"group {state.state} with {state.members} member(s) for {state.partitions} "
                "partition(s)"
                if state is not None
                else "group state unknown"
            )
            return Stalled(
                "unassigned",
                f"no partition assigned for {idle:.0f} s ({described})",
                _reform(state),
            )
        rebalancing = self._rebalancing(now, group_state)
        if rebalancing is not None:
            return rebalancing
        quiet = now - self._progress_at
        if lag > 0 and quiet >= self.timeout_s:
            return Stalled(
                "no_progress", f"{lag} record(s) behind and none handled for {quiet:.0f} s"
            )
        return None

    def _rebalancing(
        self, now: float, group_state: Callable[[], GroupState | None]
    ) -> Stalled | None:
        if self._rebalancing_since is None or now - self._rebalancing_since < self.timeout_s:
            return None
        joining = now - self._rebalancing_since
        state = group_state()
        reform = _reform(state)
        if reform != "alone" and joining < self.timeout_s + self.loop_grace_s:
            return None
        described = (
            f"group {state.state} with {state.members} member(s)" if state else "group unknown"
        )
        return Stalled(
            "rebalancing", f"joining the group for {joining:.0f} s ({described})", reform
        )

    # -- the thread that sees a loop that never comes round --------------------------------

    def start_watch(self) -> None:
        if self._hard_exit is None or self._watch is not None:
            return
        self._watch = threading.Thread(target=self._watching, daemon=True, name="liveness")
        self._watch.start()

    def stop_watch(self) -> None:
        self._done.set()

    def _watching(self) -> None:
        limit = self.timeout_s + self.loop_grace_s
        while not self._done.wait(min(5.0, limit / 4)):
            blocked = self._clock() - self._loop_at
            if blocked >= limit:
                log.error(
                    "consumer_stalled",
                    group=self.group,
                    reason="loop_blocked",
                    detail=f"the worker loop has not come round for {blocked:.0f} s",
                    action="exiting to be replaced",
                )
                assert self._hard_exit is not None  # noqa: S101 - checked in start_watch
                self._hard_exit(EXIT_REPLACE)
                return


def process_exit(code: int) -> None:
    """End the process now (the loop is stuck in a client call; nothing else returns)."""
    os._exit(code)
