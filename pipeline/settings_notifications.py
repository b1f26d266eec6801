"""Order-status notifications' settings (SMS_*, ADR 021 decision 10) and the SMS provider
built from them.

A mixin of `pipeline.settings.Settings` (pipeline/application.py builds the provider:
settings never import the application's `jobs`). SMS_PROVIDER=none (the default) sends no SMS: the
tenants that chose "sms" get e-mail only, and the notifications job logs each SMS it could
not send as `order_notification_skipped` (reason `no_sms_provider`). SMS_AUTH_TOKEN is a
secret: never printed by `outbox config`, never logged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from domain.phones import check_phone

__all__ = ["NotificationSettings"]


class NotificationSettings(BaseModel):
    sms_provider: Literal["none", "twilio"] = Field(
        default="none",
        description="SMS for order-status notifications: none, or twilio (a Twilio-style "
        "Messages API at SMS_API_URL)",
    )
    sms_api_url: str = Field(
        default="https://api.twilio.com",
        max_length=2000,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Base URL of the Messages API (…/2010-04-01/Accounts/<sid>/Messages.json "
        "is appended)",
    )
    sms_account_sid: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Account sid (the basic-auth user and part of the API path)",
    )
    sms_auth_token: SecretStr | None = Field(
        default=None, description="Auth token (basic-auth password; never logged or shown)"
    )
    sms_from: str | None = Field(
        default=None, max_length=64, description="The sender's number, E.164 (e.g. +15005550006)"
    )
    sms_connect_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Seconds to connect to the SMS API"
    )
    sms_timeout_s: float = Field(
        default=15.0, gt=0, le=60, description="Seconds an SMS request may take in all"
    )

    notification_max_age_s: int = Field(
        default=24 * 3600,
        ge=60,
        le=30 * 86400,
        description="Order events older than this get no notification (a group reading "
        "order-events from their beginning writes to no past customer)",
    )

    @model_validator(mode="after")
    def _complete(self) -> NotificationSettings:
        if self.sms_provider == "none":
            return self
        missing = [
            name
            for name, value in (
                ("SMS_ACCOUNT_SID", self.sms_account_sid),
                ("SMS_AUTH_TOKEN", self.sms_auth_token),
                ("SMS_FROM", self.sms_from),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"SMS_PROVIDER={self.sms_provider} needs {', '.join(missing)}")
        try:
            check_phone(self.sms_from)
        except ValueError as exc:
            raise ValueError(f"SMS_FROM: {exc}") from None
        return self
