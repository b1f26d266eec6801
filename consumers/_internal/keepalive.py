"""Holding the partitions of a long batch instead of stretching max.poll.interval.ms (ADR
019, decision 6).

librdkafka takes a member out of its group when `consume()` is not called within
`max.poll.interval.ms`; a batch yields after half of it, but one job may run longer than
the whole interval (its `timeout_s` is its own). So while a batch runs past a quarter of the
interval, a thread of the worker, not the one running the batch, holds the source: it pauses
the assigned partitions and keeps calling `consume()`, which returns nothing of them and
keeps the member in its group. Rebalances still happen meanwhile (another member joins or
leaves); the source tells the `BatchGuard` of them, on that thread:

- a revoked partition gets, at once and before it goes, the commit of what was durable
  **before** the batch (never a record still in progress: the batch's offsets move only
  after it commits, on the worker's thread), and is noted;
- after the batch, on the worker's thread, the noted partitions are let go (parked records,
  held retries, offsets) and the batch's outcome keeps nothing of them: their records'
  effects are durable, but their offsets are the next owner's, who starts from the commit
  and finds the batch's records done in the inbox (duplicates, not run again).

Only the source and the guard are touched on that thread; the worker's thread touches
neither until the thread has ended (joined after the batch).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from consumers.source import Source, TopicPartition

__all__ = ["BatchGuard", "KeepAlive"]

log = structlog.get_logger("consumers.runtime")

# The holding thread ends within a poll plus a revocation's commit (10 s); past this the
# worker gives up on it (and exits to be replaced: the source is in an unknown state).
JOIN_S = 30.0


class BatchGuard:
    """The source's listener while a batch holds its partitions."""

    def __init__(self, commit_durable: Callable[[set[TopicPartition]], None]) -> None:
        self._commit_durable = commit_durable
        self.gone: set[TopicPartition] = set()  # revoked while held
        self.assignment: set[TopicPartition] | None = None  # the last one heard, if any
        self.held_s: float | None = None  # how long the partitions were held
        self.stuck = False  # the holding thread did not end in time

    def revoked(self, partitions: set[TopicPartition]) -> None:
        self._commit_durable(partitions)
        self.gone |= partitions

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.assignment = set(partitions)


class KeepAlive:
    def __init__(self, group: str, *, max_poll_interval_ms: int) -> None:
        self.group = group
        self.after_s = max_poll_interval_ms / 4000
        # Each keep-alive poll waits this long at most (several per interval).
        self.every_ms = max(50, min(1000, max_poll_interval_ms // 10))

    @contextmanager
    def during(
        self, source: Source, commit_durable: Callable[[set[TopicPartition]], None]
    ) -> Iterator[BatchGuard]:
        """Around a batch: holds `source` if the batch runs past `after_s`."""
        guard = BatchGuard(commit_durable)
        if not source.keeps_alive:
            yield guard
            return
        done = threading.Event()
        thread = threading.Thread(
            target=self._hold, args=(source, guard, done), name="batch-keepalive", daemon=True
        )
        thread.start()
        try:
            yield guard
        finally:
            done.set()
            thread.join(JOIN_S)
            guard.stuck = thread.is_alive()

    def _hold(self, source: Source, guard: BatchGuard, done: threading.Event) -> None:
        if done.wait(self.after_s):
            return  # the batch ended in time: nothing held
        started = time.monotonic()
        try:
            source.hold(guard)
            log.info("consumer_batch_holding", group=self.group, after_s=self.after_s)
            try:
                while not done.is_set():
                    source.keep_alive(self.every_ms)
            finally:
                source.release()
        except Exception as exc:  # the batch goes on; at worst the member is taken out
            log.warning("consumer_batch_hold_failed", group=self.group, error=str(exc)[:300])
        guard.held_s = time.monotonic() - started
        log.info(
            "consumer_batch_released",
            group=self.group,
            held_s=round(guard.held_s, 3),
            revoked=sorted(f"{t}/{p}" for t, p in guard.gone),
        )
