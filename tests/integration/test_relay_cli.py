"""`outbox relay`, `outbox topics ensure`: JSON for scripts, named exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from sqlalchemy import func, select

from domain import CommandBus
from infra.broker import EmbeddedBroker, free_port
from infra.db import make_engine
from outbox import OutboxStatus, outbox_table, rollups_table
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_BROKER_UNREACHABLE, EXIT_FAILED, EXIT_OK
from pipeline.wiring import routed_topics
from relay.kafka import partition_for
from tests.kafka_helpers import assert_in_version_order, consume, envelopes, fresh_topic, insert
from tests.scenario import run_full_scenario

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka: EmbeddedBroker) -> str:
    url = f"sqlite:///{tmp_path}/relay.db"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    return url


def test_topics_ensure_reports_every_routed_topic_as_json(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["topics", "ensure", "--json"]) == EXIT_OK
    report = {t["topic"]: t for t in json.loads(capsys.readouterr().out)}
    assert {name: t["partitions"] for name, t in report.items()} == routed_topics()
    assert not any(t["created"] for t in report.values())  # the fixture made them already


def test_relay_once_drains_the_outbox_and_prints_a_json_summary(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade"]) == EXIT_OK
    engine = make_engine(env)
    run_full_scenario(CommandBus(engine, shards=16))
    with engine.connect() as conn:
        written = conn.execute(select(func.count()).select_from(outbox_table)).scalar_one()
    capsys.readouterr()

    assert main(["relay", "--once", "--json"]) == EXIT_OK

    summary = json.loads(capsys.readouterr().out)
    assert summary["published"] == written
    assert summary["dead"] == 0
    with engine.connect() as conn:
        statuses = set(conn.execute(select(outbox_table.c.status)).scalars())
        # Its rollups were written when it stopped: every published row, per topic.
        r = rollups_table
        rolled = conn.execute(
            select(func.sum(r.c.published)).where(r.c.grain == 60, r.c.kind == "relay")
        ).scalar_one()
    assert statuses == {OutboxStatus.PUBLISHED}
    assert rolled == written


def test_topics_ensure_without_a_broker_exits_5(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert main(["topics", "ensure"]) == EXIT_BROKER_UNREACHABLE
    assert "no Kafka broker answered" in capsys.readouterr().err


def test_relay_once_exits_5_after_max_wait_when_the_broker_stays_unreachable(
    tmp_path: Path,
) -> None:
    """A cron job's `relay --once` ends: exit 5, the rows stay pending."""
    url = f"sqlite:///{tmp_path}/relay.db"
    env = {**os.environ, "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    command = [sys.executable, "-m", "pipeline.cli"]
    subprocess.run([*command, "db", "upgrade"], env=env, check=True, capture_output=True)
    insert(make_engine(url), envelopes("order-events", keys=1, per_key=2), shards=16)
    done = subprocess.run(
        [*command, "relay", "--once", "--max-wait", "2"], env=env, capture_output=True, check=False,
        timeout=90,
    )  # fmt: skip
    assert done.returncode == EXIT_BROKER_UNREACHABLE, done.stderr
    assert b"answered nothing for 2 s" in done.stderr and b"Traceback" not in done.stderr
    with make_engine(url).connect() as conn:
        assert set(conn.execute(select(outbox_table.c.status)).scalars()) == {"pending"}


def test_outbox_broker_refuses_a_port_another_process_holds() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "broker", "--port", str(port)],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == EXIT_FAILED
    assert b"already in use" in done.stderr and b"embedded broker on" not in done.stdout


def test_relay_refuses_to_start_when_a_routed_topic_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with EmbeddedBroker() as bare:  # no topics created
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/relay.db")
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bare.bootstrap_servers)
        assert main(["db", "upgrade"]) == EXIT_OK
        assert main(["relay", "--once"]) == EXIT_FAILED
        assert "outbox topics ensure" in capsys.readouterr().err

        monkeypatch.setenv("RELAY_CREATE_TOPICS", "true")
        assert main(["relay", "--once"]) == EXIT_OK


def test_outbox_broker_runs_the_embedded_broker_with_the_routed_topics_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline().decode()
        assert f"127.0.0.1:{port}" in banner
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        try:
            assert set(routed_topics()) <= set(admin.list_topics())
        finally:
            admin.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_relay_on_the_confluent_client_puts_keys_where_kafka_python_does(
    env: str, kafka: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KAFKA_CLIENT=confluent: same records, same partitions (murmur2), same order."""
    assert main(["db", "upgrade"]) == EXIT_OK
    engine = make_engine(env)
    topic = fresh_topic(kafka.bootstrap_servers, partitions=6)
    envs = envelopes(topic, keys=30, per_key=5)
    insert(engine, envs, shards=16)
    monkeypatch.setenv("KAFKA_CLIENT", "confluent")

    assert main(["relay", "--once"]) == EXIT_OK

    records = consume(kafka.bootstrap_servers, topic, len(envs))
    assert {r.headers["ce_id"] for r in records} == {e.event_id for e in envs}
    assert all(r.partition == partition_for(r.key.encode(), 6) for r in records)
    assert_in_version_order(records)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                outbox_table.c.event_id, outbox_table.c.kafka_partition, outbox_table.c.kafka_offset
            )
        ).all()
    where = {r.headers["ce_id"]: (r.partition, r.offset) for r in records}
    assert {row.event_id: (row.kafka_partition, row.kafka_offset) for row in rows} == where


def test_relay_on_a_database_that_was_never_migrated_says_to_upgrade(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["relay", "--once"]) == EXIT_FAILED
    assert "outbox db upgrade" in capsys.readouterr().err
