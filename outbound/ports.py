"""The shapes the parts of outbound webhooks share (ADR 021): each stream codes to these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

__all__ = [
    "Endpoint",
    "EndpointState",
    "Outcome",
    "SendResult",
    "Sender",
    "SigningKey",
]


class EndpointState(StrEnum):
    ENABLED = "enabled"
    PAUSED = "paused"  # by the breaker, until paused_until; deliveries wait
    DISABLED = "disabled"  # by an operator, a 410, or 5 days of failure; with a reason


class Outcome(StrEnum):
    """What one attempt came to (webhook_attempts.outcome)."""

    DELIVERED = "delivered"  # 2xx
    FAILED = "failed"  # anything else, a timeout, a connection error: retried on schedule
    THROTTLED = "throttled"  # 429 or 503 (with Retry-After, waited, capped): retried
    GONE = "gone"  # 410: the endpoint is disabled
    REFUSED = "refused"  # the destination is not allowed (SSRF policy): not sent at all


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key that signs: "v1" with the raw HMAC secret bytes, "v1a" with an ed25519
    private key's 32 raw bytes. Never logged, never shown after creation."""

    scheme: str
    material: bytes


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint as the delivery side reads it (secrets decrypted only on use)."""

    id: str
    tenant_id: str
    url: str
    event_types: tuple[str, ...]
    ordered: bool
    rate_limit_per_s: float | None
    signing: str
    state: EndpointState
    paused_until: datetime | None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """One POST's result. `excerpt`: the response's first 4 KiB, already redacted;
    `error`: an error class name ("ConnectTimeout", "DestinationRefused"), never a secret."""

    outcome: Outcome
    status_code: int | None
    duration_ms: int
    retry_after_s: float | None = None
    error: str | None = None
    excerpt: str | None = None


class Sender(Protocol):
    """Sends one signed delivery (outbound.http.WebhookSender is the real one)."""

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> SendResult: ...
