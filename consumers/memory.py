"""An in-memory broker and its source: a working implementation of the source port.

For unit tests of the worker and of jobs (no Kafka needed), as dramatiq's StubBroker is for
its actors. It keeps per-partition logs, committed offsets with their metadata, and group
membership with round-robin assignment; a member hears of a rebalance at its next poll, as
with kafka-python. `hold_assignment=True` makes a source that joins but is never assigned
anything (the liveness watchdog's case); `broker.wedge(group)` makes a group assign nothing
to anyone until it is deleted (a wedged coordinator, consumers._internal.group_reform's case).

    broker = MemoryBroker({"orders": 3})
    broker.produce("orders", key=b"o-1", value=b"{...}", headers=[("ce_id", b"...")])
    source = MemorySource(broker, "my-group")
"""

from __future__ import annotations

import threading
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from consumers.source import CommitCallback, GroupState, Listener, Record, TopicPartition

__all__ = ["MemoryBroker", "MemoryRecord", "MemorySource"]


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class _Group:
    members: dict[str, set[str]] = field(default_factory=dict)  # member -> topics
    generation: int = 0
    committed: dict[TopicPartition, tuple[int, str]] = field(default_factory=dict)
    wedged: bool = False


class MemoryBroker:
    def __init__(self, topics: Mapping[str, int] | None = None) -> None:
        self._lock = threading.RLock()
        self._logs: dict[TopicPartition, list[MemoryRecord]] = {}
        self._partitions: dict[str, int] = {}
        self._groups: dict[str, _Group] = {}
        for name, count in (topics or {}).items():
            self.create_topic(name, count)

    def create_topic(self, name: str, partitions: int) -> None:
        with self._lock:
            self._partitions.setdefault(name, partitions)
            for p in range(self._partitions[name]):
                self._logs.setdefault((name, p), [])

    def partitions(self, topic: str) -> int:
        return self._partitions.get(topic, 0)

    def produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        partition: int | None = None,
    ) -> MemoryRecord:
        with self._lock:
            count = self._partitions[topic]
            if partition is None:
                partition = zlib.crc32(key or b"") % count
            log = self._logs[(topic, partition)]
            record = MemoryRecord(topic, partition, len(log), key, value, list(headers))
            log.append(record)
            return record

    def records(self, topic: str) -> list[MemoryRecord]:
        with self._lock:
            return [r for (t, _), log in sorted(self._logs.items()) if t == topic for r in log]

    def committed(self, group: str) -> dict[TopicPartition, tuple[int, str]]:
        with self._lock:
            return dict(self._groups.get(group, _Group()).committed)

    def members(self, group: str) -> int:
        with self._lock:
            return len(self._groups.get(group, _Group()).members)

    def wedge(self, group: str) -> None:
        with self._lock:
            self._groups.setdefault(group, _Group()).wedged = True

    def delete_group(self, group: str) -> bool:
        """Like DeleteGroups on Apache Kafka: refused while the group has members; the
        committed offsets go with the group."""
        with self._lock:
            g = self._groups.get(group)
            if g is None or g.members:
                return False
            del self._groups[group]
            return True

    def commit_standalone(
        self, group: str, offsets: Mapping[TopicPartition, tuple[int, str]]
    ) -> bool:
        """An offset commit from outside the group (generation -1): only while it is empty."""
        with self._lock:
            g = self._groups.setdefault(group, _Group())
            if g.members:
                return False
            g.committed.update(offsets)
            return True

    # -- used by MemorySource ----------------------------------------------------------------

    def _join(self, group: str, member: str, topics: set[str]) -> None:
        with self._lock:
            g = self._groups.setdefault(group, _Group())
            g.members[member] = topics
            g.generation += 1

    def _leave(self, group: str, member: str) -> None:
        with self._lock:
            g = self._groups.get(group)
            if g is not None and g.members.pop(member, None) is not None:
                g.generation += 1

    def _assignment(self, group: str, member: str) -> tuple[int, set[TopicPartition]]:
        """Round-robin over the sorted members, per topic, like a range of partitions."""
        with self._lock:
            g = self._groups[group]
            mine: set[TopicPartition] = set()
            if g.wedged:
                return g.generation, mine
            topics = sorted(set().union(*g.members.values())) if g.members else []
            for topic in topics:
                readers = sorted(m for m, ts in g.members.items() if topic in ts)
                for p in range(self._partitions.get(topic, 0)):
                    if readers[p % len(readers)] == member:
                        mine.add((topic, p))
            return g.generation, mine

    def _generation(self, group: str) -> int:
        with self._lock:
            return self._groups[group].generation

    def _commit(
        self, group: str, generation: int, offsets: Mapping[TopicPartition, tuple[int, str]]
    ) -> bool:
        with self._lock:
            g = self._groups[group]
            if g.generation != generation:
                return False
            g.committed.update(offsets)
            return True

    def _read(self, tp: TopicPartition, start: int, limit: int) -> list[MemoryRecord]:
        with self._lock:
            return self._logs.get(tp, [])[start : start + limit]

    def _end(self, tp: TopicPartition) -> int:
        with self._lock:
            return len(self._logs.get(tp, []))


class MemorySource:
    commits_on_revocation = True
    keeps_alive = True  # no max.poll.interval.ms to keep, but the runtime's hold is tested

    def __init__(self, broker: MemoryBroker, group: str, *, hold_assignment: bool = False) -> None:
        self.broker = broker
        self.group = group
        self.member = f"member-{uuid.uuid4().hex[:8]}"
        self.hold_assignment = hold_assignment
        self.closed = False
        self._listener: Listener | None = None
        self._holder: Listener | None = None  # hears of rebalances while held
        self._held: set[TopicPartition] = set()
        self._topics: set[str] = set()
        self._generation = -1
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        # While the listener hears of a revocation: the broker still takes this member's
        # commits, as Kafka does from the members of a group preparing a rebalance.
        self._revoking = False

    def subscribe(self, topics: Sequence[str], listener: Listener) -> None:
        self._topics, self._listener = set(topics), listener
        self.broker._join(self.group, self.member, self._topics)

    def _rebalance(self) -> None:
        if self._listener is None or self.broker._generation(self.group) == self._generation:
            return
        generation, mine = self.broker._assignment(self.group, self.member)
        if self.hold_assignment:
            mine = set()
        listener = self._holder or self._listener
        if self._assigned:
            self._revoking = True
            try:
                listener.revoked(set(self._assigned))
            finally:
                self._revoking = False
        self._generation, self._assigned = generation, mine
        self._paused &= mine
        committed = self.broker.committed(self.group)
        self._positions = {tp: committed.get(tp, (0, ""))[0] for tp in mine}
        listener.assigned(set(mine))

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        self._rebalance()
        out: list[Record] = []
        for tp in sorted(self._assigned - self._paused):
            if len(out) >= max_records:
                break
            batch = self.broker._read(tp, self._positions[tp], max_records - len(out))
            self._positions[tp] += len(batch)
            out += batch
        if not out and timeout_ms:
            threading.Event().wait(min(timeout_ms, 50) / 1000)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def rebalancing(self) -> bool:
        """A member hears of a rebalance at its next poll and completes it there."""
        return False

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, partitions: set[TopicPartition]) -> None:
        self._paused |= partitions & self._assigned

    def resume(self, partitions: set[TopicPartition]) -> None:
        self._paused -= partitions

    def hold(self, listener: Listener) -> None:
        self._holder = listener
        self._held = self._assigned - self._paused
        self._paused |= self._held

    def keep_alive(self, timeout_ms: int) -> None:
        self._rebalance()  # to the holder; then the new assignment is held too
        fresh = self._assigned - self._paused
        self._held = (self._held & self._assigned) | fresh
        self._paused |= fresh
        threading.Event().wait(min(timeout_ms, 50) / 1000)

    def release(self) -> None:
        self._holder = None
        self._paused -= self._held
        self._held = set()

    def lag(self) -> dict[TopicPartition, int]:
        return {tp: self.broker._end(tp) - pos for tp, pos in self._positions.items()}

    def commit(self, offsets: Mapping[TopicPartition, tuple[int, str]]) -> bool:
        generation = self.broker._generation(self.group) if self._revoking else self._generation
        return self.broker._commit(self.group, generation, offsets)

    def commit_async(
        self, offsets: Mapping[TopicPartition, tuple[int, str]], callback: CommitCallback
    ) -> None:
        ok = self.commit(offsets)
        error = None if ok else RuntimeError("the group rebalanced: commit rejected")
        callback({tp: o for tp, (o, _) in offsets.items()}, error)

    def group_state(self) -> GroupState | None:
        partitions = sum(self.broker.partitions(t) for t in self._topics)
        return GroupState("Stable", self.broker.members(self.group), partitions)

    def close(self) -> None:
        self.closed = True
        self.broker._leave(self.group, self.member)

    def reform_group(self, *, stuck_members: bool = False) -> str:
        if self.broker.members(self.group) and not stuck_members:
            return "not re-formed: member(s) still in the group: left alone"
        committed = self.broker.committed(self.group)
        if not self.broker.delete_group(self.group):
            return "not re-formed: the broker did not delete the group"
        self.broker.commit_standalone(self.group, committed)
        return f"group re-formed with {len(committed)} committed offset(s)"
