"""The source port: what the worker loop needs from a Kafka consumer, and nothing more.

The worker never touches a Kafka client directly. It polls records, pauses and resumes
partitions (priority lanes), commits offsets (asynchronously between batches, synchronously
when it stops) and hears about assignments through a listener. Two implementations exist:
`consumers.kafka_source.KafkaSource` (kafka-python) and `consumers.memory.MemorySource` (an
in-memory log for unit tests and job authors); one contract suite runs on both
(tests/integration/test_source_contract.py).

Records are anything with the ConsumerRecord attributes below: kafka-python's own records
pass through without a copy (a copy per record costs more than the rest of the poll).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CommitCallback",
    "GroupState",
    "Listener",
    "Record",
    "Source",
    "SourceUnavailable",
    "TopicPartition",
]

TopicPartition = tuple[str, int]


class SourceUnavailable(Exception):
    """No broker answered (at start): the message says where it looked."""


class Record(Protocol):
    """A polled record: kafka-python's ConsumerRecord has these attributes."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


class Listener(Protocol):
    """Called from inside `poll` when the group rebalances."""

    def revoked(self, partitions: set[TopicPartition]) -> None: ...
    def assigned(self, partitions: set[TopicPartition]) -> None: ...


# (offsets committed, or the error) once an asynchronous commit is answered.
CommitCallback = Callable[[Mapping[TopicPartition, int], Exception | None], None]


@dataclass(frozen=True, slots=True)
class GroupState:
    """What the broker says of the group (for the liveness watchdog)."""

    state: str  # Stable, PreparingRebalance, CompletingRebalance, Empty, Dead, Unknown
    members: int
    # Partitions of the subscribed topics: more members than this leaves some idle.
    partitions: int


class Source(Protocol):
    def subscribe(self, topics: Sequence[str], listener: Listener) -> None:
        """Join the group for these topics; records and assignments come from `poll`."""

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        """Records of the assigned, unpaused partitions, in offset order per partition."""

    def assignment(self) -> set[TopicPartition]: ...

    def rebalancing(self) -> bool:
        """True while the member is (re)joining its group (what `assignment` says then
        is the old generation's)."""

    def paused(self) -> set[TopicPartition]: ...

    def pause(self, partitions: set[TopicPartition]) -> None: ...

    def resume(self, partitions: set[TopicPartition]) -> None:
        """Fetch these again from where the worker's position is (records already
        returned by `poll` are not returned twice)."""

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of each assigned partition, where known."""

    def commit(self, offsets: Mapping[TopicPartition, tuple[int, str]]) -> bool:
        """Commit (next offset, metadata) per partition and wait; False when the group
        rebalanced meanwhile (the new owner starts from the last commit)."""

    def commit_async(
        self, offsets: Mapping[TopicPartition, tuple[int, str]], callback: CommitCallback
    ) -> None: ...

    def group_state(self) -> GroupState | None:
        """The group as the broker sees it; None when it cannot be asked now."""

    def close(self) -> None:
        """Leave the group at once (no commit) and let go of the connections."""

    def reform_group(self, *, stuck_members: bool = False) -> str:
        """After `close`, when this member stalled alone in its group (or, with
        `stuck_members`, with members of a group that never became Stable): re-create the
        group on the broker with its committed offsets (consumers.group_reform). Returns
        what was done, for the log."""
