"""Which Kafka client a worker reads with: `WorkerConfig.kafka_client` (KAFKA_CLIENT).

kafka-python (the default) or confluent-kafka (librdkafka, `pip install '.[fast]'`):
incremental rebalancing (KIP-848 or cooperative-sticky), static membership for supervised
slots, and about twice the reading speed (ADR 019, docs/consumers.md).
"""

from __future__ import annotations

from consumers.config import WorkerConfig
from consumers.confluent_source import ConfluentSource
from consumers.kafka_source import KafkaSource
from consumers.source import Source

__all__ = ["CLIENTS", "kafka_source"]

CLIENTS = ("kafka-python", "confluent")


def kafka_source(config: WorkerConfig, group: str) -> Source:
    """A source of the configured client for `group` (raises SourceUnavailable when no
    broker answers, or confluent-kafka is not installed)."""
    c = config
    if c.kafka_client == "confluent":
        return ConfluentSource(
            c.bootstrap_servers,
            group,
            client_id=c.client_id,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_poll_interval_ms=c.max_poll_interval_ms,
            max_poll_records=c.max_poll_records,
            instance_id=c.group_instance_id,
            protocol=c.group_protocol,
            fetch_max_wait_ms=c.fetch_max_wait_ms,
        )
    if c.kafka_client != "kafka-python":
        raise ValueError(f"unknown Kafka client {c.kafka_client!r}; one of {CLIENTS}")
    return KafkaSource(
        c.bootstrap_servers,
        group,
        client_id=c.client_id,
        session_timeout_ms=c.session_timeout_ms,
        heartbeat_interval_ms=c.heartbeat_interval_ms,
        max_poll_interval_ms=c.max_poll_interval_ms,
        max_poll_records=c.max_poll_records,
        fetch_max_wait_ms=c.fetch_max_wait_ms,
    )
