"""A job longer than max.poll.interval.ms on the confluent-kafka source (ADR 019, decision
6): the worker pauses the partitions of the batch in progress and keeps polling, so
librdkafka does not take it out of its group; nothing moves, nothing runs twice."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine
from structlog.testing import capture_logs

from consumers import JobContext, JobRegistry, job
from consumers.runtime import Worker
from consumers.source import TopicPartition
from infra.broker import EmbeddedBroker
from tests.consumer_harness import Pinged, bump, effects, harness, new_group, ping, wait_for
from tests.kafka_helpers import fresh_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

pytest.importorskip("confluent_kafka")

POLL_INTERVAL_MS = 6000  # librdkafka wants it >= the session timeout (6 s in the harness)
SLOW_S = 2 * POLL_INTERVAL_MS / 1000


def _revocations(worker: Worker) -> list[set[TopicPartition]]:
    """What the source tells this worker it lost, from now on."""
    heard: list[set[TopicPartition]] = []
    revoked = worker.revoked

    def listening(partitions: set[TopicPartition]) -> None:
        heard.append(set(partitions))
        revoked(partitions)

    worker.revoked = listening  # type: ignore[method-assign]
    return heard


def _assigned(worker: Worker, group: str) -> float:
    value = worker.metrics.registry.get_sample_value(
        "outbox_consumer_assigned_partitions", {"group": group}
    )
    return value or 0.0


def test_a_job_longer_than_max_poll_interval_keeps_its_member_and_runs_once(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry = JobRegistry()
    calls: Counter[int] = Counter()
    slow_running = threading.Event()

    @job("slow-or-not", on=Pinged, timeout_s=4 * SLOW_S, registry=registry)
    def slow_or_not(event: Pinged, ctx: JobContext) -> None:
        calls[event.n] += 1
        if event.n == 0:
            slow_running.set()
            time.sleep(SLOW_S)
        bump(ctx.connection, scope, event.n)

    topic = fresh_topic(kafka.bootstrap_servers, partitions=4)
    group = new_group(kafka.bootstrap_servers, ("slow-or-not",), topic=topic)
    options: dict[str, Any] = {
        "kafka_client": "confluent",
        "max_poll_interval_ms": POLL_INTERVAL_MS,
        "max_poll_records": 50,
    }
    with (
        capture_logs() as logs,
        harness(postgres_db, kafka.bootstrap_servers, group, registry) as h,
    ):
        one, two = h.start_worker(**options), h.start_worker(**options)
        wait_for(  # the topic's 4 partitions and the group's jobs and retry topics
            lambda: _assigned(one, group.name) > 0 and _assigned(two, group.name) > 0,
            timeout_s=120,
            what="both members assigned",
        )
        time.sleep(2.0)  # the group settled
        heard = {id(one): _revocations(one), id(two): _revocations(two)}
        assigned_before = sum(1 for e in logs if e["event"] == "consumer_assigned")
        # The slow record first on its partition, then records on every partition.
        h.write([ping(topic, 0, key="slow")])
        h.write([ping(topic, n, key=f"k-{n}") for n in range(1, 41)])
        h.start_relay()
        wait_for(slow_running.is_set, timeout_s=60, what="the slow job started")
        wait_for(
            lambda: len(effects(postgres_db, scope)) == 41,
            timeout_s=60 + 2 * SLOW_S,
            what="every job done",
        )
        time.sleep(2.0)  # a member taken out would hear of it by now
        assert one.stats.exit_reason == "stopped" and two.stats.exit_reason == "stopped"
        assert heard == {id(one): [], id(two): []}, "a member lost partitions"
        assert sum(1 for e in logs if e["event"] == "consumer_assigned") == assigned_before
    assert effects(postgres_db, scope) == dict.fromkeys(range(41), 1)
    assert calls == Counter(dict.fromkeys(range(41), 1)), "a job ran twice"
    assert one.stats.duplicates == two.stats.duplicates == 0
    assert any(e["event"] == "consumer_batch_holding" for e in logs)
