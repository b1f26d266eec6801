"""Outbound webhooks' configuration (ADR 021), built from the settings (WEBHOOK_*) in
pipeline; the defaults are the safe ones and suit production. Secrets are not here: the
encryption keys go to outbound.secrets.SecretBox only."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = ["DEFAULT_SCHEDULE_S", "WebhookConfig"]

# Svix's schedule: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class WebhookConfig:
    # Where a request may go (outbound.ssrf): off by default, the demo and tests turn on
    # http:// and 127.0.0.1 (WEBHOOK_ALLOW_HTTP, WEBHOOK_ALLOW_NETWORKS).
    allow_http: bool = False
    allow_networks: tuple[Network, ...] = ()
    # HTTP (outbound.http): connect and total timeouts, the most of a response read.
    connect_timeout_s: float = 5.0
    total_timeout_s: float = 15.0
    max_response_bytes: int = 64 * 1024
    excerpt_bytes: int = 4 * 1024
    user_agent: str = "outbox-pipeline-webhooks/1"
    # The delay before each try (the first is the first delivery), with +-jitter of it.
    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    jitter: float = 0.1
    # The most a Retry-After of a 429 / 503 makes a delivery wait.
    max_retry_after_s: float = 3600.0
    # The breaker: this many failures in a row pause the endpoint for the cool-down.
    breaker_failures: int = 5
    breaker_cooldown_s: float = 60.0
    # Failing with no success for this long disables the endpoint (Svix: 5 days).
    disable_after_s: float = 5 * 24 * 3600.0
    # How long both secrets sign after a rotation.
    secret_overlap_s: float = 24 * 3600.0
    # What `outbox prune` keeps of webhook_attempts (and finished webhook_deliveries).
    attempt_retention_s: float = 30 * 24 * 3600.0
    # The dispatcher: its sending threads (endpoints served at once), the most deliveries of
    # one endpoint a claim hands it (a run, outbound.claims), the most requests in flight to
    # one slow unordered endpoint (an ordered or rate-limited one, or a breaker's probe: one),
    # how long it holds a delivery's lease, how often it looks when idle.
    concurrency: int = 32
    per_endpoint: int = 16
    endpoint_concurrency: int = 4
    # An answer this slow makes an unordered endpoint's run take more lanes (outbound.lanes).
    lane_after_s: float = 0.2
    lease_s: float = 60.0
    poll_interval_s: float = 0.2
    # Never sent to a tenant, whatever its subscription: raw inbound bodies (secrets, PII).
    excluded_event_types: frozenset[str] = field(
        default_factory=lambda: frozenset({"payment.webhook_received"})
    )
