"""Outbound webhooks' settings (WEBHOOK_*, ADR 021) and the WebhookConfig built from them.

A mixin of `pipeline.settings.Settings`; the defaults are outbound.config's safe ones.
WEBHOOK_ENCRYPTION_KEYS (the endpoints' secrets at rest) goes to `secret_box` only, never
into WebhookConfig; it is a secret setting (pipeline.settings.SECRET_SETTINGS).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from outbound.config import DEFAULT_SCHEDULE_S, WebhookConfig
from outbound.secrets import SecretBox, SecretError
from pipeline.errors import SettingsError

__all__ = ["WebhookSettings", "secret_box", "webhook_config"]

_DEFAULTS = WebhookConfig()


def _items(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class WebhookSettings(BaseModel):
    webhook_allow_http: bool = Field(
        default=False,
        description="Let webhooks go to http:// URLs (development, tests, the demo only)",
    )
    webhook_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs webhooks may reach although reserved (e.g. 127.0.0.1/32), "
        "comma-separated; none by default",
    )
    webhook_connect_timeout_s: float = Field(
        default=_DEFAULTS.connect_timeout_s, gt=0, le=60, description="Webhook connect timeout"
    )
    webhook_timeout_s: float = Field(
        default=_DEFAULTS.total_timeout_s,
        gt=0,
        le=120,
        description="Webhook attempt's total timeout, connect to the response's last byte",
    )
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_SCHEDULE_S),
        description="Seconds before each try, comma-separated (the first is the first "
        "delivery); default Svix's",
    )
    webhook_breaker_failures: int = Field(
        default=_DEFAULTS.breaker_failures,
        ge=1,
        le=1000,
        description="Failures in a row that pause an endpoint",
    )
    webhook_breaker_cooldown_s: float = Field(
        default=_DEFAULTS.breaker_cooldown_s,
        gt=0,
        le=86400,
        description="Seconds a paused endpoint waits",
    )
    webhook_disable_after_s: float = Field(
        default=_DEFAULTS.disable_after_s,
        gt=0,
        le=90 * 86400,
        description="Seconds of failure with no success that disable an endpoint (5 days)",
    )
    webhook_secret_overlap_s: float = Field(
        default=_DEFAULTS.secret_overlap_s,
        ge=0,
        le=30 * 86400,
        description="Seconds both secrets sign after a rotation",
    )
    webhook_attempt_retention_s: float = Field(
        default=_DEFAULTS.attempt_retention_s,
        ge=3600,
        le=3650 * 86400,
        description="Seconds `outbox prune` keeps webhook attempts and finished deliveries",
    )
    webhook_concurrency: int = Field(
        default=_DEFAULTS.concurrency,
        ge=1,
        le=1024,
        description="Sending threads of a dispatcher: endpoints served at once",
    )
    webhook_per_endpoint: int = Field(
        default=_DEFAULTS.per_endpoint,
        ge=1,
        le=1000,
        description="Most deliveries of one endpoint a claim hands a dispatcher, sent one "
        "after another (1: a claim per delivery)",
    )
    webhook_endpoint_concurrency: int = Field(
        default=_DEFAULTS.endpoint_concurrency,
        ge=1,
        le=64,
        description="Most requests in flight at once to one slow unordered endpoint (one "
        "whose answer took 0.2 s or more; an ordered or rate-limited endpoint gets one at a time)",
    )
    webhook_poll_interval_s: float = Field(
        default=_DEFAULTS.poll_interval_s,
        ge=0.005,
        le=60,
        description="Seconds an idle dispatcher waits before it looks for due deliveries again",
    )
    webhook_lease_s: float = Field(
        default=_DEFAULTS.lease_s,
        ge=1,
        le=3600,
        description="Seconds a dispatcher holds a claimed delivery; a killed dispatcher's "
        "deliveries are sent again after it",
    )

    webhook_encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="kid:base64-of-32-bytes keys encrypting the endpoints' signing secrets, "
        "comma-separated, newest first (it encrypts; every key decrypts); never printed",
    )

    @field_validator("webhook_encryption_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        # Never raise with the value: the error message would show a key.
        return _items(value)

    @field_validator("webhook_encryption_keys")
    @classmethod
    def _key_ring(cls, value: list[SecretStr]) -> list[SecretStr]:
        if value:
            try:
                SecretBox.parse(key.get_secret_value() for key in value)
            except SecretError as exc:  # names a key id at most, never a key
                raise ValueError(str(exc)) from None
        return value

    @field_validator("webhook_allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        items = _items(value)
        if isinstance(items, list):
            for item in items:
                try:
                    ipaddress.ip_network(str(item), strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not a network (give a CIDR)") from None
        return items

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        items = _items(value)
        if isinstance(items, list):
            if not items:
                raise ValueError("give at least one delay (the first delivery's)")
            for item in items:
                try:
                    delay = float(item)
                except (TypeError, ValueError):
                    raise ValueError(f"{item!r} is not a number of seconds") from None
                if not 0 <= delay <= 30 * 86400:
                    raise ValueError(f"{item!r}: a delay is 0 to 30 days")
        return items


def webhook_config(settings: WebhookSettings) -> WebhookConfig:
    s = settings
    return WebhookConfig(
        allow_http=s.webhook_allow_http,
        allow_networks=tuple(
            ipaddress.ip_network(n, strict=False) for n in s.webhook_allow_networks
        ),
        connect_timeout_s=s.webhook_connect_timeout_s,
        total_timeout_s=s.webhook_timeout_s,
        schedule_s=tuple(s.webhook_retry_schedule),
        breaker_failures=s.webhook_breaker_failures,
        breaker_cooldown_s=s.webhook_breaker_cooldown_s,
        disable_after_s=s.webhook_disable_after_s,
        secret_overlap_s=s.webhook_secret_overlap_s,
        attempt_retention_s=s.webhook_attempt_retention_s,
        concurrency=s.webhook_concurrency,
        per_endpoint=s.webhook_per_endpoint,
        endpoint_concurrency=s.webhook_endpoint_concurrency,
        lease_s=s.webhook_lease_s,
        poll_interval_s=s.webhook_poll_interval_s,
    )


ENCRYPTION_KEYS = "WEBHOOK_ENCRYPTION_KEYS"


def secret_box(settings: WebhookSettings) -> SecretBox:
    """The endpoints' secrets' box; SettingsError (exit 3, naming the variable) when the
    keys are unset or malformed."""
    keys = [key.get_secret_value() for key in settings.webhook_encryption_keys]
    if not keys:
        raise SettingsError(
            f"{ENCRYPTION_KEYS} is not set: give kid:base64-of-32-random-bytes (e.g. "
            "k1:$(openssl rand -base64 32)); it encrypts the endpoints' signing secrets"
        )
    try:
        return SecretBox.parse(keys)
    except SecretError as exc:
        raise SettingsError(f"{ENCRYPTION_KEYS}: {exc}") from None
