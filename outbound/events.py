"""The endpoints' own domain events (ADR 021): the breaker paused one, or it was disabled.

Appended through the outbox like every event, on the endpoint's aggregate
("webhook_endpoint", keyed by the endpoint id); the notifications group turns each into an
e-mail to the tenant's contact. Their TYPEs are stored and published: never rename them.
"""

from __future__ import annotations

from datetime import datetime

from domain.events import DomainEvent, event
from domain.routing import Topic, add_route

__all__ = [
    "ENDPOINT_AGGREGATE",
    "WEBHOOK_TOPIC",
    "WebhookEndpointDisabled",
    "WebhookEndpointPaused",
]

ENDPOINT_AGGREGATE = "webhook_endpoint"
WEBHOOK_TOPIC = add_route(ENDPOINT_AGGREGATE, Topic("webhook-events", 3))


@event
class WebhookEndpointPaused(DomainEvent):
    """The breaker opened: `failures` in a row; deliveries wait until `until`."""

    TYPE = "webhook_endpoint.paused"
    tenant_id: str
    endpoint_id: str
    failures: int
    until: datetime


@event
class WebhookEndpointDisabled(DomainEvent):
    """Disabled by a 410, by failing for 5 days, or by an operator (`reason` says which);
    its pending deliveries are cancelled."""

    TYPE = "webhook_endpoint.disabled"
    tenant_id: str
    endpoint_id: str
    reason: str
