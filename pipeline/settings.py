"""Settings: one frozen object read once from the environment, then passed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.errors import SettingsError

__all__ = ["Settings", "SettingsError", "load_settings"]

DEFAULT_DATABASE_URL = "sqlite:///var/outbox.db"
MASK = "********"
# Never printed or echoed in an error, also not when malformed.
SECRET_SETTINGS = frozenset(
    {
        "SMTP_PASSWORD",
        "PAYMENT_WEBHOOK_SECRET",
        "DOWNLOAD_SIGNING_KEYS",
        "DASHBOARD_USERS",
        "DASHBOARD_SECRET_KEY",
        "PROFILE_API_KEY",
        "UNSUBSCRIBE_SIGNING_KEYS",
    }
)
# Ten years: a longer time window is a typo, and timedelta overflows long before 1e23 s.
MAX_WINDOW_S = 10 * 365 * 24 * 3600


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: sqlite:///path, postgresql+psycopg://..., mysql+pymysql://...",
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers"
    )
    kafka_client: Literal["kafka-python", "confluent"] = Field(
        default="kafka-python",
        description="The relay's Kafka client; confluent needs pip install '.[fast]'",
    )
    outbox_shards: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="Shards the outbox is split into by key (drain the outbox before changing)",
    )
    command_max_attempts: int = Field(
        default=5, ge=1, le=100, description="Tries of a command that loses a concurrency race"
    )
    relay_lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a relay's shard lease lives without a heartbeat (takeover delay)",
    )
    relay_stall_s: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="Seconds a relay may hold shards with due rows and publish nothing before "
        "it frees them for another relay; `outbox coroner` reports such a relay",
    )
    relay_shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="Seconds a stopping relay waits for the batch in flight (a broker that "
        "does not answer); then the batch stays pending for the next holder",
    )
    relay_batch_size: int = Field(
        default=1000, ge=1, le=5000, description="Rows a relay claims and sends per batch"
    )
    relay_poll_max_ms: int = Field(
        default=1000,
        ge=10,
        le=60_000,
        description="Longest idle wait between polls (SQLite/MySQL; a safety net on PostgreSQL)",
    )
    relay_create_topics: bool = Field(
        default=False, description="Create missing routed topics when the relay starts"
    )
    relay_ce_source: str = Field(
        default="/outbox-pipeline",
        min_length=1,
        max_length=500,
        description="CloudEvents `source` attribute",
    )
    kafka_max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        le=100 * 1024 * 1024,
        description="Largest Kafka record the relay may send (the producer's max_request_size "
        "and the broker's message.max.bytes); a command whose event would not fit is refused",
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, le=10, description="Replication factor of topics `topics ensure` creates"
    )
    consumer_dedup_window_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        le=MAX_WINDOW_S,
        description="Seconds consumers remember a handled event (inbox rows); prune keeps "
        "outbox rows at least this long, so a replay inside the window is still de-duplicated",
    )
    consumer_modules: str = Field(
        default="",
        description="Comma-separated modules to import that declare more jobs and groups",
    )
    consumer_max_poll_records: int = Field(
        default=500, ge=1, le=10_000, description="Records a consumer worker handles per batch"
    )
    consumer_max_payload_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=100 * 1024 * 1024,
        description="Larger record values are failed (reason too_large) instead of decoded",
    )
    consumer_session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        le=3_600_000,
        description="Kafka group session timeout (the embedded broker joins faster when short)",
    )
    consumer_max_poll_interval_ms: int = Field(
        default=300_000,
        ge=1000,
        le=86_400_000,
        description="Kafka max.poll.interval.ms; a batch yields after half of it",
    )
    consumer_liveness_timeout_s: float = Field(
        default=120.0,
        ge=5,
        le=86_400,
        description="A worker unassigned, or behind without progress, this long leaves its "
        "group and exits to be replaced by its supervisor",
    )
    schedule: str = Field(
        default="{}",
        description="JSON object of schedule overrides per job: a trigger (`*/5 * * * *`, "
        '`every 10m`), "off", or {"when", "grace_s", "coalesce"} (see `outbox scheduler --list`)',
    )
    scheduler_lease_ttl_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="Seconds a scheduler leader's lease lasts; a standby takes over within it",
    )
    storage_dir: Path = Field(default=Path("var/storage"), description="Uploaded files (images)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
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
    prune_retention_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        le=MAX_WINDOW_S,
        description="Seconds the scheduled prune-outbox job keeps published outbox rows "
        "(never less than CONSUMER_DEDUP_WINDOW_S)",
    )
    # A list, so that a secret can be rotated: old and new both verify during the overlap.
    payment_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="HMAC secrets of the payment gateways' webhooks, comma-separated",
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
    # Campaign e-mails (issue 16). Their own key ring: see web/unsubscribe.py.
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
        default=5, ge=1, le=1000, description="Failed sign-ins per user or address in 5 min"
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

    def gateway_schemes(self) -> dict[str, str]:
        pairs = (p.partition("=") for p in self.payment_gateways.split(",") if p.strip())
        return {name.strip(): scheme.strip() for name, _, scheme in pairs}

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from pipeline.db import check_database_url

        check_database_url(value)
        return value

    @field_validator("storage_dir")
    @classmethod
    def _usable_path(cls, value: Path) -> Path:
        if "\x00" in str(value):
            raise ValueError("must not contain a NUL character")
        return value

    def public_view(self) -> dict[str, object]:
        """Every setting by its variable name, with secrets and URL passwords masked."""
        from pipeline.db import masked_url

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

    @field_validator("schedule")
    @classmethod
    def _schedule_overrides(cls, value: str) -> str:
        # Only the shape here: every process reads the settings, only the scheduler commands
        # parse the triggers (pipeline.wiring.schedule_of, exit 3 naming the job).
        try:
            overrides = json.loads(value or "{}")
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise ValueError('must be a JSON object such as {"prune-outbox": "0 3 * * *"}')
        return value

    def schedule_overrides(self) -> dict[str, object]:
        return dict(json.loads(self.schedule or "{}"))

    @field_validator("reminder_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{server.strip()!r} is not host:port (port 1-65535)")
        return value


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; a bad value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise SettingsError(f"invalid configuration: {problems}") from None


def _problem(err: Any) -> str:
    """One bad variable: its name, what is wrong, and what it was, secrets masked."""
    from pipeline.logs import redact_text

    name = str(err["loc"][0]).upper() if err["loc"] else "?"
    given = err.get("input")
    if name in SECRET_SETTINGS:
        shown = MASK
    elif name == "DATABASE_URL" and isinstance(given, str):
        from pipeline.db import masked_url

        shown = repr(masked_url(given))
    else:
        text = repr(given)
        shown = redact_text(text if len(text) <= 200 else text[:200] + "...")
    return f"{name}: {redact_text(str(err['msg']))} (got {shown})"
