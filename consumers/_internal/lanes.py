"""Priority lanes: a group's high topics are read first.

While the high lane has records, the other partitions are paused. Records of the other
lanes already fetched are parked here (never sought back: with kafka-python 3.0.12 seeking
back lost records the same way its pause/resume bug does) and handed out, in order per
partition, once the high lane is empty. Parked records are also where a batch cut short
puts back what it did not reach: nothing later of a partition is handled before them.

Only a poll made with the other lanes paused can say the high lane is empty: the first poll
after an assignment fetches from every partition.
"""

from __future__ import annotations

from collections.abc import Callable

from consumers.source import Record, TopicPartition

__all__ = ["Lanes"]


class Lanes:
    def __init__(
        self, is_high: Callable[[str], bool], *, retry_topic: str, max_records: int
    ) -> None:
        self._is_high = is_high
        self._retry_topic = retry_topic
        self._max = max_records
        self.high_first = True
        self.parked: list[Record] = []
        # Whether the coming poll runs with the other lanes paused (set before it).
        self._trusted = False

    def assigned(self) -> None:
        self.high_first = True

    def revoked(self, partitions: set[TopicPartition]) -> None:
        self.parked = [r for r in self.parked if (r.topic, r.partition) not in partitions]

    def put_back(self, records: list[Record]) -> None:
        """Records not handled after all go first next time."""
        self.parked = records + self.parked

    def wanted_paused(
        self, assigned: set[TopicPartition], *, retries_full: bool
    ) -> set[TopicPartition]:
        high = {tp for tp in assigned if self._is_high(tp[0])}
        self._trusted = bool(high) and self.high_first
        paused: set[TopicPartition] = set()
        if high and self.high_first:
            paused |= assigned - high
        if retries_full:  # too many retries held in memory: read no more of them for now
            paused |= {tp for tp in assigned if tp[0] == self._retry_topic}
        return paused

    def timeout_ms(self, default_ms: int) -> int:
        """Call after `wanted_paused`, before the poll."""
        if self.parked and not self.high_first:
            return 0  # parked records are ready now
        if self._trusted:
            return min(default_ms, 200)
        return default_ms

    def select(self, polled: list[Record], assigned: set[TopicPartition]) -> list[Record]:
        """The records to handle now, from what a poll returned and what is parked
        (`assigned`: the assignment after the poll, which may have changed it)."""
        if not any(self._is_high(tp[0]) for tp in assigned):
            return self._unpark(polled)
        trusted = self._trusted
        first = [r for r in polled if self._is_high(r.topic)]
        self.parked += [r for r in polled if not self._is_high(r.topic)]
        if first:
            self.high_first = True
            return first
        if self.high_first and not trusted:
            return []  # not known yet whether the high lane has work
        self.high_first = False  # the high lane is empty: let the others flow
        return self._unpark([])

    def _unpark(self, records: list[Record]) -> list[Record]:
        if not self.parked:
            return records
        waiting = self.parked + records
        self.parked = waiting[self._max :]
        return waiting[: self._max]
