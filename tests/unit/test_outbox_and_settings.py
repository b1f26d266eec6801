"""Sharding, envelopes, settings and log redaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from infra.db import make_engine
from infra.logs import redact
from outbox import Envelope, outbox_rows, shard_for
from pipeline.settings import SettingsError, load_settings
from pipeline.wiring import build_worker


def test_shard_is_stable_across_processes() -> None:
    # CRC-32 of "order-42" is fixed forever; Python's hash() would change per process.
    assert shard_for("order-42", 16) == 0x57F706DE % 16 == 14


@given(st.text(min_size=1, max_size=64), st.integers(min_value=1, max_value=4096))
def test_shard_is_always_in_range(key: str, shards: int) -> None:
    assert 0 <= shard_for(key, shards) < shards


def test_zero_shards_is_refused() -> None:
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shard_for("k", 0)


def test_outbox_rows_keep_order_and_copy_the_envelope() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    envs = [
        Envelope(
            event_id=f"e{i}",
            topic="t",
            key="k",
            type="x.y",
            payload='{"n":1}',
            occurred_at=at,
            headers={"correlation_id": "c"},
        )
        for i in range(3)
    ]
    rows = outbox_rows(envs, shards=4, now=at)
    assert [r["event_id"] for r in rows] == ["e0", "e1", "e2"]
    assert rows[0]["headers"] == json.dumps({"correlation_id": "c"}, separators=(",", ":"))
    assert rows[0]["available_at"] == at and rows[0]["status"] == "pending"


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_SHARDS", "lots")
    with pytest.raises(SettingsError, match="OUTBOX_SHARDS: Input should be a valid integer"):
        load_settings()
    monkeypatch.setenv("OUTBOX_SHARDS", "4")
    monkeypatch.setenv("DATABASE_URL", "oracle://x")
    with pytest.raises(
        SettingsError, match=r"DATABASE_URL: Value error, backend .oracle. is not supported"
    ):
        load_settings()
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "localhost")
    with pytest.raises(
        SettingsError, match=r"KAFKA_BOOTSTRAP_SERVERS: .*'localhost' is not host:port"
    ):
        load_settings()


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "OUTBOX_SHARDS", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///var/")
    assert settings.outbox_shards == 16


def test_redaction_masks_secrets_and_emails() -> None:
    with structlog.testing.capture_logs(processors=[redact]) as logs:
        structlog.get_logger().info(
            "webhook_received",
            signature="abc123",
            api_key="k",
            customer="wile.e.coyote@example.com",
            order_id="o-1",
        )
    entry = logs[0]
    assert entry["signature"] == "[redacted]" and entry["api_key"] == "[redacted]"
    assert entry["customer"] == "w***@example.com"
    assert entry["order_id"] == "o-1"


def test_raw_sql_binds_a_whole_second_time_as_core_does_on_sqlite() -> None:
    from datetime import UTC, datetime

    from sqlalchemy.dialects import sqlite

    from outbox import outbox_table
    from outbox.types import bind_processor

    dialect = sqlite.dialect()
    column = outbox_table.c.published_at
    core = column.type.dialect_impl(dialect).bind_processor(dialect)
    moment = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    process = bind_processor(dialect, column)
    assert process is not None and core is not None
    assert process(moment) == core(moment) == "2026-11-22 12:00:00.000000"


def test_the_workers_fetch_wait_is_a_bounded_setting_that_reaches_its_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONSUMER_FETCH_MAX_WAIT_MS", "-1")
    with pytest.raises(SettingsError, match="CONSUMER_FETCH_MAX_WAIT_MS"):
        load_settings()
    monkeypatch.setenv("CONSUMER_FETCH_MAX_WAIT_MS", "7")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/outbox.db")
    settings = load_settings()
    worker = build_worker(settings, make_engine(settings.database_url), "analytics")
    assert worker.config.fetch_max_wait_ms == 7
