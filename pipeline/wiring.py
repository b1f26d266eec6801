"""Builds the relay from the settings: the one place that knows domain routing and Kafka."""

from __future__ import annotations

from sqlalchemy import Engine

from domain.routing import TOPICS
from pipeline.settings import Settings
from relay import KafkaPublisher, Publisher, Relay, RelayConfig, RelayMetrics

__all__ = ["build_relay", "routed_topics"]


def routed_topics() -> dict[str, int]:
    """Every topic the domain routes to, with its partition count."""
    return {topic.name: topic.partitions for topic in TOPICS.values()}


def build_relay(
    settings: Settings,
    engine: Engine,
    *,
    batch_size: int | None = None,
    metrics: RelayMetrics | None = None,
    serve_metrics: bool = False,
) -> Relay:
    config = RelayConfig(
        shards=settings.outbox_shards,
        topics=tuple(routed_topics()),
        batch_size=batch_size or settings.relay_batch_size,
        lease_ttl_s=settings.relay_lease_ttl_s,
        poll_max_s=settings.relay_poll_max_ms / 1000,
        ce_source=settings.relay_ce_source,
        # The backlog gauges cost a GROUP BY over the outbox: only when someone scrapes.
        stats_interval_s=15.0 if serve_metrics else None,
    )

    def publisher() -> Publisher:
        if settings.kafka_client == "confluent":
            from relay.confluent import ConfluentPublisher

            return ConfluentPublisher(settings.kafka_bootstrap_servers, client_id="outbox-relay")
        return KafkaPublisher(settings.kafka_bootstrap_servers, client_id="outbox-relay")

    return Relay(engine, publisher, config, metrics=metrics)
