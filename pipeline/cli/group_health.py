"""The coroner's look at the consumer groups: is any of ours stuck?

Seen once: a group stayed "Unknown" with stale members for 14 minutes, every worker inside
kafka-python's group join, and `outbox coroner` exited 0 throughout. A group of ours (one
the catalog knows, that exists on the broker) is stuck when it has lag and

* its committed offsets have not moved for `--older-than` (workers commit the time a
  partition's offset last moved as JSON metadata, `{"moved_at": ...}`; where there is none,
  the age of the oldest record it has not consumed, read from the broker), or
* it has no members, or

when its state is neither Stable nor Empty (rebalancing, Dead, Unknown).

Lag here is what the broker reports; a partition never committed counts from its start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from kafka import KafkaAdminClient, TopicPartition

from consumers._internal.offsets import moved_at_of
from consumers.kafka_clients import kafka_consumer
from pipeline.kafka_admin import PartitionLag, consumer_groups

__all__ = ["GroupHealth", "GroupsReport", "examine_groups"]

_SETTLED = ("Stable", "Empty")


@dataclass(frozen=True, slots=True)
class GroupHealth:
    group: str
    state: str
    members: int
    lag: int
    # Seconds since the lagging partitions' offsets last moved (the longest), if known.
    unmoved_s: float | None
    why: tuple[str, ...]

    @property
    def stuck(self) -> bool:
        return bool(self.why)


@dataclass(frozen=True, slots=True)
class GroupsReport:
    groups: list[GroupHealth] = field(default_factory=list)
    # The broker could not be asked: nobody can tell whether consumers progress.
    broker_error: str | None = None

    @property
    def stuck(self) -> list[GroupHealth]:
        return [g for g in self.groups if g.stuck]

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": [{**asdict(g), "stuck": g.stuck} for g in self.groups],
            "broker_error": self.broker_error,
        }


def examine_groups(
    admin: KafkaAdminClient,
    bootstrap: str,
    known: Iterable[str],
    topics_of: Callable[[str], Iterable[str]],
    *,
    older_than_s: float,
    now: float,
) -> GroupsReport:
    """Every group of ours that the broker knows, judged by the rules above."""
    on_broker = {g["group_id"] for g in admin.list_groups()}
    names = sorted(set(known) & on_broker)
    views = consumer_groups(admin, names, topics_of=topics_of)
    report = []
    for view in views:
        moved = _moved_at(admin, view.group)
        lagging = [p for p in view.partitions if p.lag > 0]
        ages = [_unmoved(p, moved, bootstrap, now) for p in lagging]
        known_ages = [a for a in ages if a is not None]
        unmoved = max(known_ages) if known_ages else None
        why = []
        if view.lag and unmoved is not None and unmoved >= older_than_s:
            why.append(f"{view.lag} behind and offsets not moved for {unmoved:.0f} s")
        if view.lag and view.members == 0:
            why.append(f"{view.lag} behind and no members")
        if view.state not in _SETTLED:
            why.append(f"state {view.state}")
        report.append(
            GroupHealth(view.group, view.state, view.members, view.lag, unmoved, tuple(why))
        )
    return GroupsReport(report)


def _moved_at(admin: KafkaAdminClient, group: str) -> dict[tuple[str, int], float | None]:
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    return {(tp.topic, tp.partition): moved_at_of(meta.metadata) for tp, meta in offsets.items()}


def _unmoved(
    part: PartitionLag,
    moved: dict[tuple[str, int], float | None],
    bootstrap: str,
    now: float,
) -> float | None:
    at = moved.get((part.topic, part.partition))
    if at is not None:
        return max(0.0, now - at)
    # No time of ours: the age of the oldest record the group has not consumed.
    stamp = _record_time(bootstrap, part)
    return None if stamp is None else max(0.0, now - stamp)


def _record_time(bootstrap: str, part: PartitionLag) -> float | None:
    consumer = kafka_consumer(bootstrap, enable_auto_commit=False)  # creates no topic
    try:
        tp = TopicPartition(part.topic, part.partition)
        consumer.assign([tp])
        if part.committed is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, part.committed)
        for records in consumer.poll(timeout_ms=2000, max_records=1).values():
            for record in records:
                return float(record.timestamp) / 1000
        return None
    finally:
        consumer.close()
