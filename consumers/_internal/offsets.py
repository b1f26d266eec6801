"""Which offset may be committed per partition.

A partition's committed offset is the next record its group must read after a restart. It
moves only past records whose outcome is durable (their batch committed) and never past a
record that is held for a later retry time (a crash must redeliver it). So, per partition:
`next` (one past the last durable record), the offsets `held` in memory for their retry
time, and what was last sent; the committable offset is the lowest of `next` and `held`.

Each commit carries the time the partition's offset last moved, as JSON metadata
(`{"moved_at": ...}`), so that `outbox coroner` can tell a group whose offsets stopped
moving (Kafka itself keeps no commit times).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

from consumers.source import TopicPartition

__all__ = ["OffsetTracker", "moved_at_of"]


def moved_at_of(metadata: str | None) -> float | None:
    """The `moved_at` time in a commit's metadata; None when absent or not ours."""
    try:
        value = json.loads(metadata or "")
    except ValueError:
        return None
    moved = value.get("moved_at") if isinstance(value, dict) else None
    return float(moved) if isinstance(moved, int | float) else None


class OffsetTracker:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._next: dict[TopicPartition, int] = {}
        self._held: dict[TopicPartition, set[int]] = {}
        self._sent: dict[TopicPartition, int] = {}
        self._moved_at: dict[TopicPartition, float] = {}

    def advance(self, tp: TopicPartition, next_offset: int) -> None:
        """Records of `tp` below `next_offset` are durable (or deliberately skipped)."""
        self._next[tp] = next_offset

    def hold(self, tp: TopicPartition, offset: int) -> None:
        self._held.setdefault(tp, set()).add(offset)

    def release(self, tp: TopicPartition, offset: int) -> None:
        held = self._held.get(tp)
        if held is not None:
            held.discard(offset)

    def committable(self, tp: TopicPartition) -> int | None:
        upto = self._next.get(tp)
        if upto is None:
            return None
        held = self._held.get(tp)
        return min(*held, upto) if held else upto

    def due(self, *, everything: bool = False) -> dict[TopicPartition, tuple[int, str]]:
        """(offset, metadata) per partition whose committable offset changed since it was
        last sent; with `everything`, every partition (the final commit at stop)."""
        now = self._clock()
        offsets: dict[TopicPartition, tuple[int, str]] = {}
        for tp in self._next:
            offset = self.committable(tp)
            assert offset is not None  # noqa: S101 - every key of _next has one
            moved = self._sent.get(tp) != offset
            if moved:
                self._moved_at[tp] = now
            if moved or everything:
                meta = json.dumps({"moved_at": round(self._moved_at.get(tp, now), 3)})
                offsets[tp] = (offset, meta)
        return offsets

    def due_of(self, partitions: set[TopicPartition]) -> dict[TopicPartition, tuple[int, str]]:
        """What may be committed of these partitions, sent or not (commit on revocation)."""
        return {tp: o for tp, o in self.due(everything=True).items() if tp in partitions}

    def sent(self, offsets: Mapping[TopicPartition, tuple[int, str]]) -> None:
        for tp, (offset, _) in offsets.items():
            self._sent[tp] = offset

    def rejected(self, offsets: Mapping[TopicPartition, int]) -> None:
        """An asynchronous commit failed: send these again with the next one."""
        for tp, offset in offsets.items():
            if self._sent.get(tp) == offset:
                del self._sent[tp]

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked: the next owner starts from the last commit."""
        for tp in partitions:
            for table in (self._next, self._held, self._sent, self._moved_at):
                table.pop(tp, None)

    def held_count(self) -> int:
        return sum(len(h) for h in self._held.values())
