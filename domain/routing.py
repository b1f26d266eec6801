"""Topic routing, declared in one place.

Routing is by aggregate type, never by event type: one aggregate's events must share a
topic (and, keyed by aggregate id, a partition) to stay in order for consumers.

An application of its own (a CONSUMER_MODULES module, see examples/) routes its aggregates
with `add_route` at import, without editing this table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TOPICS", "Topic", "add_route", "topic_for"]


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int


TOPICS: dict[str, Topic] = {
    "tenant": Topic("tenant-events", 3),
    "product": Topic("product-events", 6),
    "order": Topic("order-events", 6),
    "appointment": Topic("appointment-events", 3),
    "campaign": Topic("campaign-events", 3),
    # Opt-outs: read by nobody yet, but on the campaigns' topic, where a reader would look.
    "campaign_opt_out": Topic("campaign-events", 3),
    "interaction": Topic("interaction-events", 6),
    # Payment webhooks as accepted, and reconciliation findings: the payments group's high lane.
    "payment_webhook": Topic("payment-events", 6),
    "payment_reconciliation": Topic("payment-events", 6),
    # Sales exports and PDF reports: requested, ready, failed, expired (the exports group).
    "sales_export": Topic("export-events", 3),
}


def topic_for(aggregate_type: str) -> str:
    try:
        return TOPICS[aggregate_type].name
    except KeyError:
        raise LookupError(
            f"no topic is routed for aggregate type {aggregate_type!r}; add it to domain/routing.py"
        ) from None


def add_route(aggregate_type: str, topic: Topic) -> Topic:
    """Route another aggregate type (from a CONSUMER_MODULES module, at import).

    Declaring the same route again changes nothing. A route that differs from one already
    declared, or a topic already routed with another partition count, is refused: the
    count decides which partition a key lands on, for every producer of the topic.
    """
    existing = TOPICS.get(aggregate_type)
    if existing is not None and existing != topic:
        raise ValueError(
            f"aggregate type {aggregate_type!r} is already routed to {existing.name!r} "
            f"({existing.partitions} partitions)"
        )
    for other in TOPICS.values():
        if other.name == topic.name and other.partitions != topic.partitions:
            raise ValueError(
                f"topic {topic.name!r} is already routed with {other.partitions} partitions, "
                f"not {topic.partitions}"
            )
    TOPICS[aggregate_type] = topic
    return topic
