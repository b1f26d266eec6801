"""The runtime's settings: database, Kafka, relay, consumers, scheduler, storage and logs.

`pipeline.settings.Settings` adds the application's (mail, payments, exports, dashboard,
profiles) on top; fields keep their order, so every printout lists them as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "MAX_WINDOW_S", "RuntimeSettings"]

DEFAULT_DATABASE_URL = "sqlite:///var/outbox.db"
# Ten years: a longer time window is a typo, and timedelta overflows long before 1e23 s.
MAX_WINDOW_S = 10 * 365 * 24 * 3600


class RuntimeSettings(BaseSettings):
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
        description="The relay's and the consumers' Kafka client; confluent needs "
        "pip install '.[fast]'",
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
        description="Kafka max.poll.interval.ms; a batch yields after half of it (with "
        "KAFKA_CLIENT=confluent a longer job holds its partitions and keeps polling)",
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=500,
        ge=0,
        le=10_000,
        description="Kafka fetch.max.wait.ms of a worker's consumer: the longest the broker "
        "holds a fetch with no new record (Apache Kafka answers as soon as one arrives; the "
        "embedded broker waits the whole time, so there it bounds commit -> job start; "
        "lower costs an idle worker CPU: ~14% of a core at 10)",
    )
    consumer_group_protocol: Literal["auto", "consumer", "classic"] = Field(
        default="auto",
        description="KAFKA_CLIENT=confluent: the group protocol; auto is KIP-848 (consumer) "
        "where the broker offers it, else classic with cooperative-sticky assignment",
    )
    consumer_static_membership: bool = Field(
        default=True,
        description="KAFKA_CLIENT=confluent: each `outbox consume` worker slot has a stable "
        "group.instance.id (group-host-slot), so a replaced worker takes its partitions back "
        "without a rebalance; one supervisor per group and host",
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

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from infra.db import check_database_url

        check_database_url(value)
        return value

    @field_validator("storage_dir")
    @classmethod
    def _usable_path(cls, value: Path) -> Path:
        if "\x00" in str(value):
            raise ValueError("must not contain a NUL character")
        return value

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

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{server.strip()!r} is not host:port (port 1-65535)")
        return value
