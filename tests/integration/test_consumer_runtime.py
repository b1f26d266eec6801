"""The consumer runtime against real databases and the embedded broker."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter

from kafka import KafkaProducer
from sqlalchemy import Engine, func, select

from consumers import BatchFinished, JobContext, JobRegistry, job
from consumers.failed_jobs import FailedFilter, retry
from infra.broker import EmbeddedBroker
from outbox import job_batches_table, job_locks_table
from tests.consumer_harness import (
    Chore,
    Pinged,
    bump,
    chore,
    count_failed,
    counting,
    effects,
    failed_rows,
    harness,
    inbox_rows,
    new_group,
    pending,
    ping,
    wait_for,
)
from tests.kafka_helpers import consume


def test_an_event_delivered_three_times_has_its_effect_once(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry = JobRegistry()
    calls: Counter[int] = Counter()

    @job("count-pings", on=Pinged, registry=registry)
    def count_pings(event: Pinged, ctx: JobContext) -> None:
        calls[event.n] += 1
        bump(ctx.connection, scope, event.n)

    group = new_group(kafka.bootstrap_servers, ("count-pings",))
    topic = group.topics[0]
    twice = str(uuid.uuid4())
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        # The same event three times (a replay, a relay duplicate, a redelivery), and others.
        h.write([ping(topic, 1, event_id=twice), ping(topic, 2), ping(topic, 3)])
        h.write([ping(topic, 1, event_id=twice)])
        h.write([ping(topic, 1, event_id=twice), ping(topic, 4)])
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.duplicates >= 2 and len(effects(engine, scope)) == 4)
    assert effects(engine, scope) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert calls[1] == 1
    sample = worker.metrics.registry.get_sample_value
    labels = {"group": group.name, "job": "count-pings"}
    assert sample("outbox_consumer_handled_total", {**labels, "outcome": "processed"}) == 4
    assert sample("outbox_consumer_handled_total", {**labels, "outcome": "duplicate"}) == 2
    assert sample("outbox_consumer_job_duration_seconds_count", labels) == 4
    rows = inbox_rows(engine, group.name)
    assert (
        sorted((r.job_name, r.status, r.attempts) for r in rows) == [("count-pings", "done", 1)] * 4
    )


def test_a_job_failing_twice_then_succeeding_ends_processed_after_three_attempts(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry = JobRegistry()
    attempts: list[int] = []

    @job("flaky", on=Pinged, tries=3, backoff=(0.2, 0.2), registry=registry)
    def flaky(event: Pinged, ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        bump(ctx.connection, scope, event.n)  # undone by the savepoint when it fails
        if ctx.attempt < 3:
            raise ConnectionError("the image service is down")

    group = new_group(kafka.bootstrap_servers, ("flaky",))
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(group.topics[0], 7)])
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.processed == 1, what="third attempt processed")
    assert attempts == [1, 2, 3]
    assert effects(engine, scope) == {7: 1}
    [row] = inbox_rows(engine, group.name)
    assert (row.status, row.attempts) == ("done", 3)
    assert failed_rows(engine, group.name) == []


def test_a_job_always_failing_ends_in_failed_jobs_and_the_dlq_then_a_retry_runs_it_once(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry = JobRegistry()
    broken = {"yes": True}
    attempts: list[int] = []
    bystander: Counter[int] = Counter()

    @job("fragile", on=Pinged, tries=2, backoff=(0.2,), registry=registry)
    def fragile(event: Pinged, ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        if broken["yes"]:
            raise ValueError(f"cannot handle ping {event.n}")
        bump(ctx.connection, scope, event.n)

    @job("bystander", on=Pinged, registry=registry)
    def watch(event: Pinged, ctx: JobContext) -> None:
        bystander[event.n] += 1

    group = new_group(kafka.bootstrap_servers, ("fragile",))
    other = new_group(kafka.bootstrap_servers, ("bystander",), topic=group.topics[0])
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        h.groups.append(other)
        h.write([ping(group.topics[0], 1)])
        h.start_relay()
        worker = h.start_worker()
        h.start_worker(other)
        wait_for(lambda: count_failed(engine, group.name) == 1, what="failed job recorded")
        assert attempts == [1, 2]
        [failed] = failed_rows(engine, group.name)
        assert (failed.job_name, failed.reason, failed.attempts) == ("fragile", "exception", 2)
        assert failed.exception_class == "ValueError"
        assert "cannot handle ping 1" in failed.exception_message
        assert "Traceback" in failed.traceback
        assert failed.topic == group.topics[0]
        [dlq] = consume(kafka.bootstrap_servers, group.dlq_topic, 1, quiet_s=0.5)
        assert dlq.headers["x-failed-job-id"] == str(failed.id)
        assert dlq.headers["ce_id"] == failed.event_id
        assert json.loads(dlq.value) == {"n": 1, "note": ""}

        broken["yes"] = False
        retried = h.in_transaction(
            lambda conn: retry(conn, FailedFilter(ids=(failed.id,)), {group.name: group}, shards=8)
        )
        assert retried == [failed.id]
        wait_for(
            lambda: effects(engine, scope) == {1: 1} and worker.stats.processed == 1,
            what="retried job's effect",
        )
        # the bystander's first assignment may come late on a slow broker: wait for it
        wait_for(
            lambda: sum(bystander.values()) >= 1,
            what="the bystander group's handling",
            timeout_s=60,
        )
    assert attempts == [1, 2, 1]  # the retry starts from attempt one
    assert failed_rows(engine, group.name) == []
    assert bystander == Counter({1: 1})  # the other group saw the event once, no retries


def test_poison_messages_go_to_failed_jobs_and_the_next_good_one_is_processed(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry, group = counting(kafka.bootstrap_servers, scope)
    topic = group.topics[0]

    def headers(type_: str, event_id: str | None = None) -> list[tuple[str, bytes]]:
        return [("ce_id", (event_id or str(uuid.uuid4())).encode()), ("ce_type", type_.encode())]

    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, max_request_size=4_000_000)
    sends = [
        (b"{not json", headers("test.pinged")),
        (b'{"n": 1}', headers("test.no_such_type")),
        (b'{"n": "one", "extra": true}', headers("test.pinged")),
        (b'{"n": 1, "note": "' + b"x" * 60_000 + b'"}', headers("test.pinged")),
        (b"\xff\xfe binary", headers("test.pinged")),
        (b'{"n": 1}', []),
        (b'{"n": 5}', headers("test.pinged")),
    ]
    for value, hdrs in sends:
        producer.send(topic, key=b"same-key", value=value, headers=hdrs)
    producer.flush()
    producer.close()
    with harness(
        engine,
        kafka.bootstrap_servers,
        group,
        registry,
        max_payload_bytes=50_000,
        metrics_interval_s=0.1,
    ) as h:
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: effects(engine, scope) == {5: 1}, what="good message after poison")
        wait_for(lambda: count_failed(engine, group.name) == 6 and worker.stats.failed == 6)
        sample = worker.metrics.registry.get_sample_value
        wait_for(
            lambda: (
                sample("outbox_consumer_failed_jobs", {"group": group.name}) == 6
                and sample(
                    "outbox_consumer_lag", {"group": group.name, "topic": topic, "partition": "0"}
                )
                is not None
            ),
            what="failed-jobs and lag gauges",
        )
    reasons = [(r.reason, r.job_name) for r in failed_rows(engine, group.name)]
    # The job is named when the type says which one it was for (a retry goes to it).
    assert reasons == [
        ("undecodable", "count"),
        ("unknown_type", None),
        ("invalid_schema", "count"),
        ("too_large", "count"),
        ("undecodable", "count"),
        ("undecodable", None),
    ]
    binary = failed_rows(engine, group.name)[4]
    assert binary.payload_encoding == "base64"
    assert base64.b64decode(binary.payload) == b"\xff\xfe binary"


def test_a_unique_job_dispatched_twice_within_its_window_runs_once(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry = JobRegistry()

    @job(
        "sync-once",
        on=Chore,
        unique_key=lambda e: f"chore-{e.n}",
        unique_for_s=3600,
        registry=registry,
    )
    def sync_once(event: Chore, ctx: JobContext) -> None:
        bump(ctx.connection, scope, event.n)

    group = new_group(kafka.bootstrap_servers, ("sync-once",))
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        first = h.in_transaction(lambda c: h.dispatcher.dispatch(c, "sync-once", Chore(n=1)))
        second = h.in_transaction(lambda c: h.dispatcher.dispatch(c, "sync-once", Chore(n=1)))
        other = h.in_transaction(lambda c: h.dispatcher.dispatch(c, "sync-once", Chore(n=2)))
        assert first is not None and other is not None
        assert second is None  # the lock holds: a no-op
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.processed == 2, what="both unique jobs ran")
        # Released on success: the next dispatch for the same key runs again.
        again = h.in_transaction(lambda c: h.dispatcher.dispatch(c, "sync-once", Chore(n=1)))
        assert again is not None
        wait_for(lambda: worker.stats.processed == 3, what="dispatch after release ran")
    assert effects(engine, scope) == {1: 2, 2: 1}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(job_locks_table)).scalar_one() == 0


def test_with_a_backlog_on_both_lanes_the_high_lane_is_handled_first(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    registry = JobRegistry()
    order: list[str] = []

    @job("lane-default", on=Pinged, registry=registry)
    def on_default(event: Pinged, ctx: JobContext) -> None:
        order.append("default")

    @job("lane-high", on=Chore, priority="high", registry=registry)
    def on_high(event: Chore, ctx: JobContext) -> None:
        order.append("high")

    group = new_group(kafka.bootstrap_servers, ("lane-default", "lane-high"), high=True)
    with harness(postgres_db, kafka.bootstrap_servers, group, registry, max_poll_records=20) as h:
        h.write([ping(group.topics[0], n) for n in range(100)])
        h.write([chore(group.high_topics[0], n) for n in range(100)])
        h.start_relay()
        wait_for(lambda: pending(postgres_db) == 0, what="backlog published")
        worker = h.start_worker()
        wait_for(lambda: worker.stats.processed == 200, what="both lanes drained")
    assert order == ["high"] * 100 + ["default"] * 100


def test_a_batch_counts_its_members_and_dispatches_catch_and_finally_not_then(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    registry = JobRegistry()
    follow_ups: list[tuple[str, int, int]] = []

    @job("member", on=Chore, tries=1, registry=registry)
    def member(event: Chore, ctx: JobContext) -> None:
        if event.n == 3:
            raise RuntimeError("recipient 3 bounced")

    def recorder(name: str) -> None:
        @job(name, on=BatchFinished, registry=registry)
        def record(event: BatchFinished, ctx: JobContext) -> None:
            follow_ups.append((name, event.total, event.failed))

    for name in ("on-then", "on-catch", "on-finally"):
        recorder(name)
    group = new_group(kafka.bootstrap_servers, ("member", "on-then", "on-catch", "on-finally"))
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        batch_id = h.in_transaction(
            lambda c: h.dispatcher.dispatch_batch(
                c,
                "campaign 1",
                "member",
                [Chore(n=n) for n in range(5)],
                then="on-then",
                catch="on-catch",
                finally_="on-finally",
            )
        )
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: len(follow_ups) == 2, what="catch and finally")
        assert worker.stats.processed >= 4
    assert sorted(follow_ups) == [("on-catch", 5, 1), ("on-finally", 5, 1)]
    with engine.connect() as conn:
        row = conn.execute(
            select(job_batches_table).where(job_batches_table.c.id == batch_id)
        ).one()
    assert (row.total, row.pending, row.failed) == (5, 0, 1)
    assert row.finished_at is not None
