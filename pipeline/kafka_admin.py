"""Consumer groups on the broker: lag per partition (`outbox status`) and offset rewinds
(`outbox consumers rewind`), with kafka-python's admin client.

Tansu quirks handled here (docs/measured.md): its DescribeGroups answer carries authorised
operations kafka-python cannot decode (we do not need them), and its end offsets can read
low, so lag is clamped at zero and offsets are set explicitly, never clamped to its "end".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import kafka.errors as kerr
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec, OffsetTimestamp
from kafka.structs import OffsetAndMetadata

from relay import BrokerUnavailable, RelayError

__all__ = [
    "GroupActive",
    "GroupView",
    "PartitionLag",
    "RewindPlan",
    "admin_client",
    "apply_rewind",
    "consumer_groups",
    "group_membership",
    "plan_rewind",
    "read_topics",
]


class GroupActive(RelayError):
    """The group has live members: its offsets cannot (and must not) be moved now."""


class _Admin(KafkaAdminClient):  # type: ignore[misc]
    def _process_acl_operations(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.pop("authorized_operations", None)  # Tansu sends values kafka-python rejects
        return obj


def admin_client(bootstrap_servers: str) -> KafkaAdminClient:
    try:
        return _Admin(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id="outbox-ops",
            bootstrap_timeout_ms=5_000,
        )
    except kerr.KafkaError as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {bootstrap_servers} ({exc}); "
            "check KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
        ) from exc


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass(slots=True)
class GroupView:
    group: str
    state: str
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lag": self.lag}


def _describe(admin: KafkaAdminClient, group: str) -> tuple[str, int]:
    info = admin.describe_groups([group]).get(group, {})
    return str(info.get("group_state", "Unknown")), len(info.get("members") or [])


def group_membership(admin: KafkaAdminClient, group: str) -> dict[str, Any]:
    """How a group's members take part (`outbox consumers status`): its protocol (classic
    with the assignor its members agreed on, or KIP-848's consumer protocol, which
    DescribeGroups answers with "not a classic group"), its state and members, and the
    static ones' group.instance.id (ADR 019)."""
    info = admin.describe_groups([group]).get(group, {})
    members = info.get("members") or []
    error = str(info.get("error") or "")
    if "classic" in error.lower():
        protocol = "consumer (KIP-848)"
    elif info.get("protocol_data"):
        protocol = f"classic ({info['protocol_data']})"
    elif members:  # the embedded broker (Tansu) leaves the assignor out
        protocol = "classic (assignor not reported by the broker)"
    else:
        protocol = "none (no member)"
    static = sorted(str(m["group_instance_id"]) for m in members if m.get("group_instance_id"))
    return {
        "group": group,
        "state": str(info.get("group_state", "Unknown")),
        "members": len(members),
        "protocol": protocol,
        "static_members": static,
    }


def _committed(admin: KafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    return {tp: int(meta.offset) for tp, meta in offsets.items() if meta.offset >= 0}


def _ends(
    admin: KafkaAdminClient, tps: Iterable[TopicPartition], spec: Any = OffsetSpec.LATEST
) -> dict[TopicPartition, int]:
    specs = dict.fromkeys(tps, spec)
    if not specs:
        return {}
    return {tp: int(v.offset) for tp, v in admin.list_partition_offsets(specs).items()}


def consumer_groups(
    admin: KafkaAdminClient,
    groups: Iterable[str] | None = None,
    *,
    topics_of: Callable[[str], Iterable[str]] | None = None,
) -> list[GroupView]:
    """Each group's state, live members and lag per partition (committed -> end).

    `topics_of(group)`: the topics a group of ours reads. Their partitions with no committed
    offset count from where the group starts (consumers start at the earliest record), so
    records on a partition nobody has committed yet are lag too, not invisible."""
    names = (
        list(groups) if groups is not None else sorted(g["group_id"] for g in admin.list_groups())
    )
    views = []
    for name in names:
        state, members = _describe(admin, name)
        committed = _committed(admin, name)
        read = list(topics_of(name)) if topics_of is not None else []
        never = [tp for tp in _partitions(admin, read) if tp not in committed] if read else []
        starts = _ends(admin, never, OffsetSpec.EARLIEST)
        ends = _ends(admin, [*committed, *never])
        view = GroupView(name, state, members)
        for tp in sorted([*committed, *never]):
            start = committed.get(tp)
            begin = start if start is not None else starts.get(tp, 0)
            end = ends.get(tp, begin)
            view.partitions.append(
                PartitionLag(tp.topic, tp.partition, start, end, max(0, end - begin))
            )
        views.append(view)
    return views


@dataclass(slots=True)
class RewindPlan:
    group: str
    # (topic, partition) -> (committed or None, new offset)
    moves: dict[tuple[str, int], tuple[int | None, int]] = field(default_factory=dict)
    # (topic, partition) -> why it stays
    unchanged: dict[tuple[str, int], str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "moves": [
                {"topic": t, "partition": p, "committed": c, "offset": n}
                for (t, p), (c, n) in sorted(self.moves.items())
            ],
            "unchanged": [
                {"topic": t, "partition": p, "why": why}
                for (t, p), why in sorted(self.unchanged.items())
            ],
        }


def _partitions(admin: KafkaAdminClient, topics: Iterable[str]) -> list[TopicPartition]:
    found = []
    for description in admin.describe_topics(list(topics)):
        for part in description["partitions"]:
            found.append(TopicPartition(description["name"], part["partition_index"]))
    return found


def plan_rewind(
    admin: KafkaAdminClient,
    group: str,
    *,
    topics: Iterable[str] = (),
    to_time: datetime | None = None,
    outbox_offsets: Mapping[tuple[str, int], int] | None = None,
) -> RewindPlan:
    """Where each partition of the group's topics goes: the first record at or after
    `to_time`, or the recorded offset of the first outbox row at or after an id
    (`outbox_offsets`). A rewind never moves an offset forward (that would skip messages)."""
    state, members = _describe(admin, group)
    if members:
        raise GroupActive(
            f"consumer group {group!r} has {members} active member(s) (state {state}): stop its "
            "consumers first (`outbox consume` processes), then rewind"
        )
    committed = _committed(admin, group)
    wanted = set(topics) or {tp.topic for tp in committed}
    tps = list(_partitions(admin, wanted)) if wanted else []
    plan = RewindPlan(group)
    targets: dict[TopicPartition, int | None] = {}
    if to_time is not None:
        ms = int(to_time.timestamp() * 1000)
        found = admin.list_partition_offsets({tp: OffsetTimestamp(ms) for tp in tps})
        targets = {
            tp: (int(found[tp].offset) if tp in found and found[tp].offset >= 0 else None)
            for tp in tps
        }
    elif outbox_offsets is not None:
        targets = {tp: outbox_offsets.get((tp.topic, tp.partition)) for tp in tps}
    for tp in tps:
        where = (tp.topic, tp.partition)
        target = targets.get(tp)
        now = committed.get(tp)
        if target is None:
            plan.unchanged[where] = "no record at or after the point"
        elif now is not None and target >= now:
            plan.unchanged[where] = f"committed {now} is already at or before {target}"
        else:
            plan.moves[where] = (now, target)
    return plan


def apply_rewind(admin: KafkaAdminClient, plan: RewindPlan) -> None:
    """Commit the planned offsets for the (stopped) group."""
    if not plan.moves:
        return
    _state, members = _describe(admin, plan.group)
    if members:
        raise GroupActive(f"consumer group {plan.group!r} gained members meanwhile; nothing moved")
    offsets = {
        TopicPartition(t, p): OffsetAndMetadata(new, "", -1)
        for (t, p), (_, new) in plan.moves.items()
    }
    results = admin.alter_group_offsets(plan.group, offsets)
    failed = {str(tp): err.__name__ for tp, err in results.items() if err is not kerr.NoError}
    if failed:
        raise RelayError(f"the broker refused some offsets of {plan.group!r}: {failed}")


def read_topics(
    bootstrap: str, topics: list[str], expected: int, *, timeout_s: float, quiet_s: float = 0.0
) -> list[Any]:
    """Every record of `topics` from the beginning (kafka-python ConsumerRecords), once
    `expected` have arrived and nothing more came for `quiet_s`, or at `timeout_s`.

    Read by consuming, not by end offsets: Tansu's are not reliable (docs/measured.md)."""
    # Imported here: the admin commands that do not read records need no consumer client.
    from consumers.kafka_clients import kafka_consumer

    # A topic that does not exist is read as empty, never created.
    consumer = kafka_consumer(bootstrap, enable_auto_commit=False)
    try:
        consumer.assign(
            [
                TopicPartition(topic, p)
                for topic in topics
                for p in consumer.partitions_for_topic(topic) or ()
            ]
        )
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200, max_records=5000).values():
                records += batch
                last_new = time.monotonic()
            if len(records) >= expected and time.monotonic() - last_new >= quiet_s:
                break
        return records
    finally:
        consumer.close()
