"""Delayed retries held in memory until their time.

A retry record read before its `x-not-before` time is kept here (its offset held, see
consumers._internal.offsets) while the partition moves on; a heap gives the earliest first, so a
0.2 s retry read after a 120 s one still runs first. Ties keep arrival order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from consumers.source import TopicPartition

__all__ = ["DelayedRetries"]


class _Placed(Protocol):
    @property
    def tp(self) -> TopicPartition: ...


T = TypeVar("T", bound=_Placed)


class DelayedRetries(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: datetime, item: T) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime, limit: int) -> list[T]:
        due: list[T] = []
        while self._heap and self._heap[0][0] <= now and len(due) < limit:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked partitions: their held retries are the next owner's now."""
        gone = set(partitions)
        self._heap = [entry for entry in self._heap if entry[2].tp not in gone]
        heapq.heapify(self._heap)
