"""Which group protocol and identity a librdkafka consumer uses (ADR 019).

* **The protocol.** KIP-848 (`group.protocol=consumer`: the broker assigns, rebalances are
  incremental and never stop the whole group) where the broker offers it, the classic
  protocol with cooperative-sticky assignment (KIP-429) where it does not. A broker offers
  KIP-848 when its ApiVersions list ConsumerGroupHeartbeat (API key 68): Apache Kafka 4.0
  does; the embedded broker (Tansu) does not. librdkafka told to use KIP-848 against a
  broker without it neither fails nor joins (seen on Tansu: no error, no assignment), so
  the versions are asked first; a broker that lists the API and then refuses the
  heartbeat (Kafka 3.7-3.9 without `group.coordinator.rebalance.protocols=consumer`)
  answers with one of `FALLBACK_ERRORS`, and the source starts again on the classic one.
* **Records and group states** of librdkafka in the port's shapes (`ConfluentRecord`,
  `STATE_NAMES`).
* **Static membership.** A supervised worker slot has a stable `group.instance.id`, so a
  worker that the supervisor replaces takes its partitions back without rebalancing the
  others (`instance_id`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "CLASSIC",
    "CONSUMER",
    "CONSUMER_GROUP_HEARTBEAT",
    "FALLBACK_ERRORS",
    "MIXED_HINT",
    "STATE_NAMES",
    "ConfluentRecord",
    "Protocol",
    "describe",
    "instance_id",
    "protocol_for",
]

Protocol = Literal["consumer", "classic"]
CONSUMER: Protocol = "consumer"
CLASSIC: Protocol = "classic"

# The KIP-848 heartbeat's API key (Kafka protocol).
CONSUMER_GROUP_HEARTBEAT = 68

# librdkafka error names that mean "this broker does not run the KIP-848 protocol".
FALLBACK_ERRORS = frozenset(
    {"UNSUPPORTED_VERSION", "UNSUPPORTED_FEATURE", "_UNSUPPORTED_FEATURE", "INVALID_REQUEST"}
)

# A JoinGroup refused with INCONSISTENT_GROUP_PROTOCOL: what to do.
MIXED_HINT = (
    "the group has members on the other Kafka client (kafka-python's assignors share no "
    "protocol with cooperative-sticky): stop all its workers, then start them on one client"
)
# librdkafka's group states, as the liveness watchdog names them (DescribeGroups').
STATE_NAMES = {
    "STABLE": "Stable",
    "EMPTY": "Empty",
    "DEAD": "Dead",
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
}

# group.instance.id: at most 249 characters of [a-zA-Z0-9._-] (Kafka's rule for ids).
_ID_MAX = 249
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9._-]")


def protocol_for(api_versions: Mapping[int, tuple[int, int]], wanted: str = "auto") -> Protocol:
    """The protocol to use with a broker whose ApiVersions are these (key -> (min, max)).

    `wanted`: auto (KIP-848 when offered), consumer (KIP-848 even when not offered: the
    fallback still applies on refusal) or classic."""
    if wanted == CLASSIC:
        return CLASSIC
    if wanted == CONSUMER or CONSUMER_GROUP_HEARTBEAT in api_versions:
        return CONSUMER
    return CLASSIC


def describe(protocol: Protocol) -> str:
    """One line for the log and `outbox consumers status`."""
    if protocol == CONSUMER:
        return "consumer (KIP-848, broker-side assignment)"
    return "classic (cooperative-sticky)"


def instance_id(group: str, slot: int, host: str | None = None) -> str:
    """The stable `group.instance.id` of a supervisor's worker slot on a host."""
    name = host if host is not None else socket.gethostname()
    raw = f"{group}-{name}-{slot}"
    return _NOT_ALLOWED.sub("_", raw)[-_ID_MAX:]


class ConfluentRecord:
    """A polled record with the port's attributes (a librdkafka Message has methods)."""

    __slots__ = ("headers", "key", "offset", "partition", "topic", "value")

    def __init__(self, message: Any) -> None:
        self.topic: str = message.topic()
        self.partition: int = message.partition()
        self.offset: int = message.offset()
        self.key: bytes | None = message.key()
        self.value: bytes | None = message.value()
        self.headers: list[tuple[str, bytes | None]] | None = message.headers()
