"""The kafka-python clients of the consumer runtime: consumers that never create a topic,
and an admin client for describing groups.

A metadata request that names a topic creates it on a broker that allows auto-creation
(Apache Kafka's default, and the embedded broker's), with the broker's default partition
count (3 on Kafka, 4 on the embedded broker), not the count routing declares. A worker
started before `outbox topics ensure` then created the routed topics itself, and the relay
published to them with per-key partitioning that differed from routing; a group's `.dlq`
topic, never subscribed, was never created at all.

So no client of ours may create a topic: only `outbox topics ensure` (and
RELAY_CREATE_TOPICS) do, with routing's counts. kafka-python 3.0.12 accepts
`allow_auto_create_topics=False` but never hands it to the cluster metadata that builds
the requests (its connection manager creates `ClusterMetadata` with three options only),
so the flag is also set there; `tests/integration/test_foreign_application.py` checks the
broker's topic list after a worker subscribed to topics that did not exist.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer

__all__ = ["GroupAdmin", "classic_group", "forbid_topic_creation", "kafka_consumer"]


def forbid_topic_creation(consumer: KafkaConsumer) -> KafkaConsumer:
    """Make a kafka-python consumer ask for metadata without creating topics."""
    consumer.config["allow_auto_create_topics"] = False
    consumer._client.cluster.config["allow_auto_create_topics"] = False
    return consumer


def kafka_consumer(bootstrap_servers: str, **config: Any) -> KafkaConsumer:
    """A KafkaConsumer (kafka-python options; servers comma-separated) whose metadata
    requests never create a topic."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","), allow_auto_create_topics=False, **config
    )
    return forbid_topic_creation(consumer)


class GroupAdmin(KafkaAdminClient):  # type: ignore[misc]
    """Describing a group: the authorized operations some brokers send (the embedded one's
    include values kafka-python does not know) are not needed here."""

    def _process_acl_operations(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.pop("authorized_operations", None)
        return obj


def classic_group(admin: GroupAdmin, group: str) -> tuple[str, int]:
    """(state, members) of a classic-protocol group, as DescribeGroups says."""
    info = admin.describe_groups([group]).get(group, {})
    return str(info.get("group_state", "Unknown")), len(info.get("members") or [])
