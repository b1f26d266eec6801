"""Settings: one frozen object read once from the environment, then passed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from domain.money import FALLBACK_CURRENCY, Currency
from pipeline.errors import SettingsError
from pipeline.settings_notifications import NotificationSettings
from pipeline.settings_runtime import DEFAULT_DATABASE_URL, MAX_WINDOW_S, RuntimeSettings
from pipeline.settings_webhooks import WebhookSettings

__all__ = ["DEFAULT_DATABASE_URL", "RuntimeSettings", "Settings", "SettingsError", "load_settings"]

MASK = "********"
# Never printed or echoed in an error, also not when malformed.
SECRET_SETTINGS = frozenset(
    {
        "SMTP_PASSWORD",
        "PAYMENT_WEBHOOK_SECRET",
        "PAYMENT_WEBHOOK_SECRETS",
        "DOWNLOAD_SIGNING_KEYS",
        "DASHBOARD_USERS",
        "DASHBOARD_SECRET_KEY",
        "PROFILE_API_KEY",
        "UNSUBSCRIBE_SIGNING_KEYS",
        "WEBHOOK_ENCRYPTION_KEYS",
        "SMS_AUTH_TOKEN",
    }
)


class Settings(RuntimeSettings, WebhookSettings, NotificationSettings):
    """Every setting: the runtime's (`RuntimeSettings`), then the application's below."""

    # PAYMENT_WEBHOOK_SECRETS__<GATEWAY>: one key of a mapping setting per variable.
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", case_sensitive=False, env_nested_delimiter="__"
    )

    smtp_host: str = Field(default="127.0.0.1", description="SMTP server for e-mail (reminders)")
    smtp_port: int = Field(default=1025, ge=1, le=65535, description="SMTP server port")
    smtp_from: str = Field(
        default="reminders@localhost", min_length=3, description="Sender address of e-mails"
    )
    smtp_username: str | None = Field(default=None, description="SMTP login (none: no AUTH)")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password")
    smtp_starttls: bool = Field(default=False, description="Upgrade the SMTP connection (TLS)")
    smtp_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Seconds an SMTP connection or reply may take"
    )
    reminder_timezone: str = Field(
        default="UTC", description="IANA zone reminder e-mails show start times in"
    )
    payment_webhook_retention_s: int = Field(
        default=30 * 24 * 3600,
        ge=60,
        le=MAX_WINDOW_S,
        description="Seconds a payment webhook's raw body and headers are kept; `outbox "
        "prune` then empties them (the row, its ids and outcome stay)",
    )
    prune_retention_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        le=MAX_WINDOW_S,
        description="Seconds the scheduled prune-outbox job keeps published outbox rows "
        "(never less than CONSUMER_DEDUP_WINDOW_S)",
    )
    rollup_retention_s: int = Field(
        default=14 * 24 * 3600,
        ge=3600,
        le=MAX_WINDOW_S,
        description="Seconds the dashboard's per-minute rollups (its charts' history) are "
        "kept; `outbox prune` and the prune-outbox job delete older ones",
    )
    # One ring per gateway: a gateway's secret never verifies another gateway's deliveries.
    # A list each, so that a secret can be rotated: old and new both verify in the overlap.
    payment_webhook_secrets: dict[str, Annotated[list[SecretStr], NoDecode]] = Field(
        default_factory=dict,
        description="Each gateway's own webhook HMAC secrets: PAYMENT_WEBHOOK_SECRETS__<GATEWAY>"
        "=new,old (comma-separated, rotated on its own), or a JSON object gateway -> list",
    )
    payment_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Deprecated: the ring of the FIRST gateway of PAYMENT_GATEWAYS only, "
        "when it has no PAYMENT_WEBHOOK_SECRETS__<GATEWAY> of its own",
    )
    payment_gateways: str = Field(
        default="stripe=stripe,standard=standard-webhooks",
        description="Gateways `outbox serve` accepts at /webhooks/payments/<name>, as "
        "name=scheme pairs (schemes: stripe, standard-webhooks)",
    )
    # Apart from every other secret: a leaked webhook secret must not sign downloads.
    download_signing_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="kid:secret keys of signed download URLs, comma-separated, newest first",
    )
    exports_dir: Path = Field(
        default=Path("var/exports"), description="Files signed download URLs may serve"
    )
    export_url_ttl: int = Field(
        default=24 * 3600,
        ge=60,
        le=30 * 86400,
        description="Seconds a sales export's or report's signed URL lives; then prune-outbox "
        "removes its file",
    )
    # Campaign e-mails (ADR 008). Their own key ring: see web/unsubscribe.py.
    unsubscribe_signing_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="kid:secret keys of campaign unsubscribe links, comma-separated, newest "
        "first (none: campaign e-mails fail for an operator until set)",
    )
    unsubscribe_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public https base URL of `outbox serve` that unsubscribe links point to",
    )
    unsubscribe_mailto: str | None = Field(
        default=None, description="Address taking unsubscribe e-mails (List-Unsubscribe mailto)"
    )
    # Unset by default: the relay's quota is the provider's, and its 4xx throttling replies
    # are retried with back-off; a made-up default only capped a worker (50/s once did).
    campaign_emails_per_s: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Campaign e-mails per second per worker (unset: no limit of our own)",
    )
    serve_db_connections: int = Field(
        default=4, ge=1, le=64, description="Database connections per `outbox serve` worker"
    )
    default_currency: Currency = Field(
        default=FALLBACK_CURRENCY,
        description="ISO 4217 currency of orders placed without one (and of every order "
        "placed before currencies existed): set it once",
    )
    dashboard_users: SecretStr | None = Field(
        default=None,
        description="Dashboard users, `name:role:argon2-hash` entries separated by `;` or new "
        "lines; role viewer or operator (`outbox dashboard hash-password` makes the hash)",
    )
    dashboard_secret_key: SecretStr | None = Field(
        default=None,
        description="Key (at least 32 characters) signing the dashboard's session cookies",
    )
    dashboard_session_ttl_s: int = Field(
        default=8 * 3600, ge=60, le=7 * 24 * 3600, description="Dashboard sign-in lifetime"
    )
    dashboard_secure_cookies: bool = Field(
        default=False,
        description="Mark the session cookie Secure on every answer (it is on https anyway)",
    )
    dashboard_login_attempts: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Failed sign-ins per (user, address), or per known browser, before its "
        "back-off (30 s, doubling to 15 min)",
    )
    dashboard_login_address_attempts: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Failed sign-ins per address, whatever the user names, before its back-off",
    )
    dashboard_trusted_proxies: str = Field(
        default="",
        max_length=4000,
        description="Addresses or networks of proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto the dashboard believes (comma-separated; none by default)",
    )
    dashboard_statement_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Time limit of each dashboard database statement (and of its lock waits)",
    )
    dashboard_db_connections: int = Field(
        default=8,
        ge=2,
        le=64,
        description="Database connections per dashboard process; a kind of page holds at "
        "most a quarter of them",
    )
    profile_provider: Literal["local", "http"] = Field(
        default="local",
        description="Where tenant profiles come from: local (keywords of the tenant's products) "
        "or http (an OpenAI-compatible chat-completions endpoint, PROFILE_API_URL)",
    )
    profile_api_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        description="The chat-completions endpoint, e.g. https://host/v1/chat/completions",
    )
    profile_api_key: SecretStr | None = Field(
        default=None, description="Bearer key of the profile endpoint (never logged)"
    )
    profile_model: str = Field(
        default="gpt-4o-mini", min_length=1, max_length=100, description="Model to ask"
    )
    profile_connect_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Seconds to connect to the profile endpoint"
    )
    profile_read_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=170,
        description="Seconds the profile endpoint may take to answer (under the job's 180 s limit)",
    )
    profile_delay_s: float = Field(
        default=0.0,
        ge=0,
        le=7 * 24 * 3600,
        description="Seconds after onboarding before a tenant's profile is enriched (time to "
        "list products; a delayed dispatch)",
    )

    @model_validator(mode="after")
    def _profile_endpoint(self) -> Settings:
        if self.profile_provider == "http" and not self.profile_api_url:
            raise ValueError("PROFILE_PROVIDER=http needs PROFILE_API_URL")
        return self

    @field_validator(
        "payment_webhook_secret", "download_signing_keys", "unsubscribe_signing_keys", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("payment_gateways")
    @classmethod
    def _gateway_pairs(cls, value: str) -> str:
        for pair in filter(None, (p.strip() for p in value.split(","))):
            name, sep, scheme = pair.partition("=")
            if not sep or not name.strip() or scheme.strip() not in ("stripe", "standard-webhooks"):
                raise ValueError(
                    f"{pair!r}: give name=stripe or name=standard-webhooks, comma-separated"
                )
        return value

    @field_validator("payment_webhook_secrets", mode="before")
    @classmethod
    def _secret_rings(cls, value: Any) -> Any:
        if isinstance(value, str):
            # Never raise with the value: the error message would show a secret.
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError(
                    "give a JSON object gateway -> secrets, or PAYMENT_WEBHOOK_SECRETS__<GATEWAY>"
                ) from None
        if isinstance(value, dict):
            return {str(name).strip().lower(): _comma_list(ring) for name, ring in value.items()}
        return value

    def gateway_schemes(self) -> dict[str, str]:
        pairs = (p.partition("=") for p in self.payment_gateways.split(",") if p.strip())
        return {name.strip(): scheme.strip() for name, _, scheme in pairs}

    def webhook_secret_rings(self) -> dict[str, list[SecretStr]]:
        """Each configured gateway's own secrets (empty: every delivery to it is refused).
        The deprecated PAYMENT_WEBHOOK_SECRET is the ring of the first gateway only, and only
        when that gateway has no PAYMENT_WEBHOOK_SECRETS__<GATEWAY>."""
        rings: dict[str, list[SecretStr]] = {}
        for index, name in enumerate(self.gateway_schemes()):
            ring = self.payment_webhook_secrets.get(name.lower())
            if ring is None and index == 0:
                ring = self.payment_webhook_secret
            rings[name] = list(ring or [])
        return rings

    def webhook_secret_notes(self) -> list[str]:
        """What `outbox serve` warns about at start-up (names only, never a secret)."""
        notes: list[str] = []
        gateways = list(self.gateway_schemes())
        if self.payment_webhook_secret:
            first = gateways[0] if gateways else None
            if first is None or first.lower() in self.payment_webhook_secrets:
                notes.append("PAYMENT_WEBHOOK_SECRET is deprecated and ignored here")
            else:
                notes.append(
                    f"PAYMENT_WEBHOOK_SECRET is deprecated: it serves gateway {first!r} only; "
                    f"set PAYMENT_WEBHOOK_SECRETS__{first.upper()} instead"
                )
        for name in sorted(set(self.payment_webhook_secrets) - {g.lower() for g in gateways}):
            notes.append(f"PAYMENT_WEBHOOK_SECRETS__{name.upper()}: no such gateway")
        for name, ring in self.webhook_secret_rings().items():
            if not ring:
                notes.append(
                    f"gateway {name!r} has no secrets (PAYMENT_WEBHOOK_SECRETS__{name.upper()}): "
                    "every delivery to it is refused"
                )
        return notes

    def public_view(self) -> dict[str, object]:
        """Every setting by its variable name, with secrets and URL passwords masked."""
        from infra.db import masked_url

        values = {k.upper(): v for k, v in self.model_dump(mode="json").items()}
        values["DATABASE_URL"] = masked_url(self.database_url)
        for name in SECRET_SETTINGS:
            if values.get(name) is not None:
                values[name] = MASK
        return values

    def secret_values(self) -> list[str]:
        """The configured secrets themselves (for the redactor to mask anywhere): every
        SecretStr setting, alone or in a list, and the database URL's password."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        found: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, dict):
                value = [item for ring in value.values() for item in ring]
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, SecretStr):
                    found.append(item.get_secret_value())
        try:
            password = make_url(self.database_url).password
        except ArgumentError:
            password = None
        if password:
            found.append(str(password))
        return found

    @field_validator("reminder_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return value


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        # Never raise with the value: the error message would show a secret.
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                pass
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; a bad value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise SettingsError(f"invalid configuration: {problems}") from None
    except SourceError as exc:  # a variable that is not JSON where JSON is needed (no value)
        raise SettingsError(f"invalid configuration: {exc}") from None


def _problem(err: Any) -> str:
    """One bad variable: its name, what is wrong, and what it was, secrets masked."""
    from infra.logs import redact_text

    name = str(err["loc"][0]).upper() if err["loc"] else "?"
    given = err.get("input")
    if name in SECRET_SETTINGS:
        shown = MASK
    elif name == "DATABASE_URL" and isinstance(given, str):
        from infra.db import masked_url

        shown = repr(masked_url(given))
    else:
        text = repr(given)
        shown = redact_text(text if len(text) <= 200 else text[:200] + "...")
    return f"{name}: {redact_text(str(err['msg']))} (got {shown})"
