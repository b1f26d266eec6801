"""Errors of the relay, with what to do next in each message.

RelayError
├── TopicsMissing        configured topics absent and auto-creation off (start-up)
├── PartitionsDiffer     a routed topic exists with another partition count (start-up)
├── BrokerUnavailable    no broker answered (the relay retries with back-off)
├── PublisherClosed      the publisher was used after close()
└── PublisherBroken      the client hit a fatal error; the relay replaces it
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "PartitionsDiffer",
    "PublisherBroken",
    "PublisherClosed",
    "RelayError",
    "TopicsMissing",
]


class RelayError(Exception):
    """Base of the relay's errors."""


class TopicsMissing(RelayError):
    def __init__(self, missing: list[str]) -> None:
        self.missing = sorted(missing)
        super().__init__(
            f"topic(s) {', '.join(self.missing)} do not exist on the broker and the relay does "
            "not create topics; run `outbox topics ensure` (or set RELAY_CREATE_TOPICS=true)"
        )


class PartitionsDiffer(RelayError):
    """Routed topics exist with other partition counts than routing's: a key would land on
    another partition than routing says (created by hand, or auto-created by a client)."""

    def __init__(self, differing: dict[str, tuple[int, int]]) -> None:
        self.differing = dict(sorted(differing.items()))  # topic -> (partitions, wanted)
        found = "; ".join(
            f"{topic} has {has} partitions, routing wants {wanted}"
            for topic, (has, wanted) in self.differing.items()
        )
        super().__init__(
            f"partition counts differ from routing ({found}): the relay does not publish to "
            "them, as keys would land on other partitions than routing says. A changed count "
            "re-maps keys: recreate the topic (while nothing is pending for it) or change "
            "routing deliberately, then `outbox topics ensure`"
        )


class BrokerUnavailable(RelayError):
    """No Kafka broker could be reached at the bootstrap servers."""


class PublisherClosed(RelayError):
    """send_batch/flush after close()."""


class PublisherBroken(RelayError):
    """The client is in a fatal state (a fenced or lost producer id): every later send
    would fail. Raised by send_batch; the relay closes it and connects a fresh one."""
