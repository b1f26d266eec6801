"""The relay: publishes outbox rows to Kafka in order per key, with several instances.

Never imports `domain`: it moves opaque rows of the outbox table.
"""

from relay.errors import BrokerUnavailable, RelayError, TopicsMissing
from relay.kafka import KafkaPublisher
from relay.leases import LeaseKeeper, share_of
from relay.loop import Relay, RelayConfig, RelayStats
from relay.metrics import RelayMetrics
from relay.publisher import Delivered, Failed, Message, Outcome, Publisher
from relay.topics import TopicReport, ensure_topics

__all__ = [
    "BrokerUnavailable",
    "Delivered",
    "Failed",
    "KafkaPublisher",
    "LeaseKeeper",
    "Message",
    "Outcome",
    "Publisher",
    "Relay",
    "RelayConfig",
    "RelayError",
    "RelayMetrics",
    "RelayStats",
    "TopicReport",
    "TopicsMissing",
    "ensure_topics",
    "share_of",
]
