"""Workers in their own processes: a crash between the database commit and the offset
commit, a job over its timeout replaced by the supervisor, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from sqlalchemy import Engine, text

from consumers import Group, JobContext, JobRegistry, job
from infra.broker import EmbeddedBroker
from infra.db import make_engine
from relay import ensure_topics
from tests.consumer_harness import (
    Pinged,
    bump,
    count_failed,
    counting,
    effects,
    failed_rows,
    harness,
    inbox_rows,
    new_group,
    ping,
    wait_for,
)
from tests.kafka_helpers import fresh_topic

ROOT = Path(__file__).resolve().parents[2]


def _env(engine: Engine, bootstrap: str, group: str, topic: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CONSUMER_MODULES": "tests.consumer_jobs",
        "CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "CONSUMER_MAX_POLL_INTERVAL_MS": "6000",
        "OUTBOX_SHARDS": "8",
        "OUTBOX_TEST_GROUP": group,
        "OUTBOX_TEST_TOPIC": topic,
        "PYTHONPATH": str(ROOT),
        "LOG_FORMAT": "console",
    }


def _process_group(bootstrap: str) -> tuple[str, str, Group]:
    """The group tests/consumer_jobs.py declares, as this process sees it."""
    name, topic = f"g-{uuid.uuid4().hex[:10]}", fresh_topic(bootstrap)
    group = Group(name, topics=(topic,), jobs=(f"{name}-work",))
    ensure_topics(bootstrap, group.internal_topics())
    return name, topic, group


def _registry(scope: str) -> tuple[JobRegistry, str]:
    registry = JobRegistry()
    name = f"{scope}-work"

    @job(name, on=Pinged, tries=2, backoff=(0.2,), registry=registry)
    def work(event: Pinged, ctx: JobContext) -> None:
        bump(ctx.connection, scope, event.n)

    return registry, name


def test_a_worker_killed_between_its_database_commit_and_its_offset_commit_loses_nothing(
    server_db: Engine, kafka: EmbeddedBroker
) -> None:
    name, topic, group = _process_group(kafka.bootstrap_servers)
    registry, _ = _registry(name)
    with harness(server_db, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(topic, n) for n in range(40)])
        h.start_relay()
        url = server_db.url.render_as_string(hide_password=False)
        child = subprocess.run(
            [sys.executable, "-m", "tests.consumer_crash_child", url, kafka.bootstrap_servers,
             name, topic],
            cwd=ROOT,
            env=_env(server_db, kafka.bootstrap_servers, name, topic),
            capture_output=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
        committed_before = effects(server_db, name)
        assert committed_before, "the child committed its first batch before dying"
        assert set(committed_before.values()) == {1}
        worker = h.start_worker()
        wait_for(lambda: len(effects(server_db, name)) == 40, timeout_s=30, what="all effects")
        wait_for(lambda: worker.stats.duplicates >= len(committed_before), what="redelivery")
    assert effects(server_db, name) == dict.fromkeys(range(40), 1)  # once each, none lost


def test_a_job_over_its_timeout_is_failed_and_its_worker_replaced(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    name, topic, group = _process_group(kafka.bootstrap_servers)
    registry, _ = _registry(name)
    with harness(postgres_db, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(topic, 1, note="hang", key="k"), ping(topic, 2, key="k")])
        h.start_relay()
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "consume", "--group", name],
            cwd=ROOT,
            env=_env(postgres_db, kafka.bootstrap_servers, name, topic),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(
                lambda: effects(postgres_db, name) == {1: 1, 2: 1},
                timeout_s=60,
                what="both pings, the hung one on its second attempt",
            )
        finally:
            supervisor.send_signal(signal.SIGTERM)
            _, stderr = supervisor.communicate(timeout=30)
    text = stderr.decode()
    assert supervisor.returncode == 0, text[-3000:]
    assert "exited with 75 after" in text
    assert "starting another in 0.5 s" in text  # it ran a while: no crash-loop back-off
    assert "ran past its 1 s timeout" in text
    rows = {r.attempts for r in inbox_rows(postgres_db, name)}
    assert rows == {1, 2}  # ping 2 once; ping 1 done on its second attempt


def test_a_job_that_always_times_out_inside_the_database_ends_in_failed_jobs_after_its_tries(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    """JobTimeout inside pg_sleep invalidates the batch's connection: the attempt is recorded
    on a fresh one (after the sleeping session is ended), the worker is replaced, and after
    its 2 tries the message is in failed_jobs; the message after it is handled."""
    name, topic, group = _process_group(kafka.bootstrap_servers)
    registry, _ = _registry(name)
    with harness(postgres_db, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(topic, 1, note="sleep-in-db", key="k"), ping(topic, 2, key="k")])
        h.start_relay()
        log = tmp_path / "consume.log"
        with log.open("wb") as sink:  # a file, not a pipe nobody reads while it runs
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "consume", "--group", name],
                cwd=ROOT,
                env=_env(postgres_db, kafka.bootstrap_servers, name, topic),
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
            try:
                wait_for(
                    lambda: (
                        count_failed(postgres_db, name) == 1
                        and effects(postgres_db, name) == {2: 1}
                    ),
                    timeout_s=90,
                    what="the sleeper failed for good, the next ping handled",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()[-5000:]}") from None
            finally:
                supervisor.send_signal(signal.SIGTERM)
                supervisor.wait(timeout=30)
        stderr = log.read_bytes()
        with postgres_db.connect() as conn:
            sleeping = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep%'"
                )
            ).scalar_one()
    text_err = stderr.decode()
    assert supervisor.returncode == 0, text_err[-3000:]
    assert text_err.count("exited with 75 after") >= 2, text_err[-3000:]
    [row] = failed_rows(postgres_db, name)
    assert (row.reason, row.attempts, row.exception_class) == ("timeout", 2, "JobTimeout")
    assert sleeping == 0  # no session left sleeping with the batch's locks


def test_stop_finishes_the_message_in_flight_commits_and_a_successor_continues(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry = JobRegistry()

    @job("slow", on=Pinged, registry=registry)
    def slow(event: Pinged, ctx: JobContext) -> None:
        bump(ctx.connection, scope, event.n)
        time.sleep(0.05)

    group = new_group(kafka.bootstrap_servers, ("slow",))
    with harness(postgres_db, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(group.topics[0], n, key="one-key") for n in range(60)])
        h.start_relay()
        first = h.start_worker()
        wait_for(lambda: first.stats.processed >= 5, what="a few handled")
        h.stop(first)
        done = first.stats.processed
        assert done < 60
        assert len(effects(postgres_db, scope)) == done  # everything handled was committed
        committed = _committed(kafka.bootstrap_servers, group.name, group.topics[0])
        assert committed == done  # ... and its offsets too, nothing beyond
        second = h.start_worker()
        wait_for(lambda: second.stats.processed == 60 - done, what="the rest")
        assert second.stats.duplicates == 0
    assert effects(postgres_db, scope) == dict.fromkeys(range(60), 1)


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return sum(
            consumer.committed(TopicPartition(topic, p)) or 0
            for p in consumer.partitions_for_topic(topic) or ()
        )
    finally:
        consumer.close(autocommit=False)


def test_a_broker_outage_mid_stream_loses_nothing_and_duplicates_nothing(
    postgres_db: Engine, private_broker: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    bootstrap = private_broker.bootstrap_servers
    registry, group = counting(bootstrap, scope)
    with harness(postgres_db, bootstrap, group, registry) as h:
        h.start_relay()
        worker = h.start_worker()
        h.write([ping(group.topics[0], n) for n in range(20)])
        wait_for(lambda: len(effects(postgres_db, scope)) == 20, what="before the outage")
        private_broker.pause()
        try:
            h.write([ping(group.topics[0], n) for n in range(20, 40)])
            time.sleep(8)  # past the session timeout: the group must rejoin afterwards
        finally:
            private_broker.resume()
        wait_for(lambda: len(effects(postgres_db, scope)) == 40, timeout_s=60, what="after")
        assert worker.stats.failed == 0
    assert effects(postgres_db, scope) == dict.fromkeys(range(40), 1)


def test_database_connections_killed_mid_batch_cost_a_retry_not_an_effect(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry = JobRegistry()
    in_flight, killed = threading.Event(), threading.Event()

    @job("count-then-wait", on=Pinged, registry=registry)
    def count_then_wait(event: Pinged, ctx: JobContext) -> None:
        if event.n == 150 and not killed.is_set():
            in_flight.set()  # the batch's transaction is open: the test kills it now
            killed.wait(10)
        bump(ctx.connection, scope, event.n)

    group = new_group(kafka.bootstrap_servers, ("count-then-wait",))
    writer = make_engine(postgres_db.url.render_as_string(hide_password=False))
    try:
        with harness(postgres_db, kafka.bootstrap_servers, group, registry) as h:
            h.write([ping(group.topics[0], n, key="one-partition") for n in range(300)])
            h.start_relay()
            worker = h.start_worker()
            assert in_flight.wait(30), "the batch holding message 150 never ran"
            with writer.connect() as conn:
                count = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert count >= 1
            killed.set()
            wait_for(lambda: len(effects(writer, scope)) == 300, timeout_s=60, what="all")
            wait_for(lambda: worker.stats.processed + worker.stats.duplicates >= 300)
    finally:
        writer.dispose()
        postgres_db.dispose()  # no dead connection left in the pool for the next test
    assert effects(writer, scope) == dict.fromkeys(range(300), 1)
    assert worker.stats.failed == 0
