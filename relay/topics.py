"""`outbox topics ensure`: create the configured topics with their partition counts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import kafka.errors as kerr
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from relay.errors import BrokerUnavailable, PartitionsDiffer

__all__ = ["TopicReport", "check_partitions", "ensure_topics"]


@dataclass(frozen=True, slots=True)
class TopicReport:
    topic: str
    wanted_partitions: int
    partitions: int
    created: bool

    @property
    def mismatch(self) -> bool:
        """An existing topic with another partition count: keys would land elsewhere."""
        return self.partitions != self.wanted_partitions


def ensure_topics(
    bootstrap_servers: str, topics: Mapping[str, int], *, replication_factor: int = 1
) -> list[TopicReport]:
    """Create the missing topics; report every topic with its actual partition count.

    Existing topics are never changed: growing a topic's partitions re-maps its keys.
    """
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id="outbox-topics",
            bootstrap_timeout_ms=5_000,
        )
    except kerr.KafkaError as exc:  # 3.x: KafkaTimeoutError 'Unable to bootstrap'
        raise BrokerUnavailable(
            f"no Kafka broker answered at {bootstrap_servers} ({exc}); "
            "check KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
        ) from exc
    try:
        existing = set(admin.list_topics())
        missing = [name for name in topics if name not in existing]
        if missing:
            # TopicAlreadyExists: created concurrently by another `ensure`.
            with contextlib.suppress(kerr.TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(name, topics[name], replication_factor) for name in missing]
                )
        described = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(list(topics))}
    finally:
        admin.close()
    return [
        TopicReport(name, wanted, described.get(name, 0), name in missing)
        for name, wanted in topics.items()
    ]


def check_partitions(partitions: Callable[[str], int | None], wanted: Mapping[str, int]) -> None:
    """Raise PartitionsDiffer when an existing topic has another partition count than
    `wanted` says (`partitions`: a publisher's count of a topic, None when it is missing)."""
    differing = {}
    for topic, count in wanted.items():
        has = partitions(topic)
        if has is not None and has != count:
            differing[topic] = (has, count)
    if differing:
        raise PartitionsDiffer(differing)
