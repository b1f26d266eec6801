"""What the pipeline sends to others: signed webhooks to the tenants' endpoints (issue 25,
ADR 021).

- ``outbound.ports``: the shapes every part shares (an endpoint, a send result, an outcome).
- ``outbound.secrets``: signing secrets, generated, encrypted at rest, rotated.
- ``outbound.endpoints``: the endpoints' store and which of them an event goes to;
  ``outbound.endpoint_rules``: what an endpoint may be (URL, event-type patterns).
- ``outbound.signing``: Standard Webhooks signatures (``v1`` HMAC-SHA256, ``v1a`` ed25519).
- ``outbound.ssrf`` and ``outbound.http``: where a request may go, and the one way it goes.
- ``outbound.deliveries`` and ``outbound.dispatcher``: one delivery per (event, endpoint),
  its schedule, the breaker, the rate limit, and the process that sends them.
- ``outbound.attempt_log`` and ``outbound.recovery``: what was tried; resend and recover.
- ``outbound.events``: the endpoints' own domain events (paused, disabled).

It imports the domain and the outbox, never the application (`jobs`) or the web.
"""

from __future__ import annotations

__all__: list[str] = []
