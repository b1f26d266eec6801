"""The source port: what the worker loop needs from a Kafka consumer, and nothing more.

The worker never touches a Kafka client directly. It polls records, pauses and resumes
partitions (priority lanes; a source that `keeps_alive` also holds the partitions of a long
batch, ADR 019), commits offsets (asynchronously between batches, synchronously
when it stops) and hears about assignments through a listener. Three implementations exist:
`consumers.kafka_source.KafkaSource` (kafka-python),
`consumers.confluent_source.ConfluentSource` (librdkafka, KAFKA_CLIENT=confluent, ADR 019)
and `consumers.memory.MemorySource` (an in-memory log for unit tests and job authors); one
contract suite runs on all three (tests/integration/test_source_contract.py).

Records are anything with the ConsumerRecord attributes below: kafka-python's own records
pass through without a copy (a copy per record costs more than the rest of the poll);
librdkafka's are copied into attribute objects (its Message has methods).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from consumers.errors import ConsumerRuntimeError

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


class SourceUnavailable(ConsumerRuntimeError):
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
    """Called from inside `poll` when the group rebalances.

    `revoked` names the partitions taken away (an eager source: all of them; an incremental
    one, confluent-kafka: only those that move), `assigned` the member's whole assignment
    after the rebalance. Every partition named by `assigned` that was revoked (or not held)
    resumes from the group's committed offset (the reset policy, earliest, where there is
    none), also one this member held before the rebalance: what `poll` returned of it and
    was not committed is returned again. So a worker may drop, at `revoked`, whatever it
    fetched and did not commit; a partition kept through an incremental rebalance keeps its
    position."""

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Called before these partitions are let go: a source that
        `commits_on_revocation` takes a commit of them here."""

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
    # Whether `commit` may be called from inside the listener's `revoked` (commit on
    # revocation): kafka-python 3.0.12 calls a listener on its IO thread, where a
    # synchronous commit would wait on that very thread.
    commits_on_revocation: bool
    # Whether `hold` can keep the member in its group while a batch runs longer than
    # max.poll.interval.ms allows (confluent-kafka; consumers._internal.keepalive).
    keeps_alive: bool

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

    def hold(self, listener: Listener) -> None:
        """A batch of the assigned partitions is in progress: pause those not paused yet,
        and tell `listener` of rebalances until `release`. Meanwhile the worker's thread
        leaves the source alone; another thread calls `keep_alive` and then `release`."""

    def keep_alive(self, timeout_ms: int) -> None:
        """A poll while held, so the member stays in its group; partitions assigned
        meanwhile are paused too, and what they returned is kept for the next `poll`."""

    def release(self) -> None:
        """Resume what `hold` paused (and still assigned); the subscribing listener hears
        of rebalances again."""

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
        group on the broker with its committed offsets (consumers._internal.group_reform). Returns
        what was done, for the log."""
