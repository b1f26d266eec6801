"""Jobs declared `transactional=False`: run after their batch committed, in transactions of
their own, with the inbox, retries and failed jobs as for any job."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import replace

from sqlalchemy import Engine

from consumers import JobContext, JobRegistry, job
from consumers.failed_jobs import FailedFilter, retry
from infra.broker import EmbeddedBroker
from outbox import Envelope
from tests.consumer_harness import (
    SHARDS,
    Pinged,
    bump,
    effects,
    failed_rows,
    harness,
    inbox_rows,
    new_group,
    pending,
    ping,
    wait_for,
)


def test_an_outside_job_runs_once_per_message_after_its_batch_committed(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    """Given a group whose messages run a transactional job and an outside one, when the
    same event arrives twice, each job has its effect once per message, and the outside job
    sees its batch's transactional effects already committed (on SQLite too: no lock)."""
    inside, outside = uuid.uuid4().hex, uuid.uuid4().hex
    registry = JobRegistry()
    calls: Counter[int] = Counter()
    saw_inside: dict[int, int | None] = {}

    @job("count-inside", on=Pinged, registry=registry)
    def count_inside(event: Pinged, ctx: JobContext) -> None:
        bump(ctx.connection, inside, event.n)

    @job("count-outside", on=Pinged, transactional=False, registry=registry)
    def count_outside(event: Pinged, ctx: JobContext) -> None:
        calls[event.n] += 1
        saw_inside[event.n] = effects(engine, inside).get(event.n)
        with ctx.transaction() as conn:
            bump(conn, outside, event.n)

    group = new_group(kafka.bootstrap_servers, ("count-inside", "count-outside"))
    topic = group.topics[0]
    twice = str(uuid.uuid4())

    def of_acme(envelope: Envelope) -> Envelope:
        return replace(envelope, headers={**envelope.headers, "tenant_id": "acme"})

    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(topic, n) for n in range(1, 6)] + [of_acme(ping(topic, 6, event_id=twice))])
        h.write([of_acme(ping(topic, 6, event_id=twice))])
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.processed == 12 and worker.stats.duplicates == 2)
    expected = dict.fromkeys(range(1, 7), 1)
    assert effects(engine, inside) == expected
    assert effects(engine, outside) == expected
    assert calls == Counter(expected)
    assert saw_inside == expected  # its batch had committed before it ran
    rows = inbox_rows(engine, group.name)
    assert (
        sorted((r.job_name, r.status, r.attempts) for r in rows)
        == [("count-inside", "done", 1)] * 6 + [("count-outside", "done", 1)] * 6
    )
    # Both claim paths record the tenant header (the dashboard's jobs search by tenant).
    tenants = {(r.job_name, r.message_id): r.tenant_id for r in rows}
    assert tenants[("count-inside", twice)] == tenants[("count-outside", twice)] == "acme"
    assert sum(t is not None for t in tenants.values()) == 2


def test_a_failing_outside_job_is_retried_then_failed_and_an_operator_retry_runs_it(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    """n=1 fails once then succeeds; n=2 fails until an operator retries it after a fix."""
    scope = uuid.uuid4().hex
    registry = JobRegistry()
    attempts: Counter[int] = Counter()
    broken = {2}

    @job(
        "flaky-outside",
        on=Pinged,
        tries=2,
        backoff=(0.2,),
        transactional=False,
        registry=registry,
    )
    def flaky_outside(event: Pinged, ctx: JobContext) -> None:
        attempts[event.n] += 1
        if event.n in broken or attempts[event.n] == 1:
            raise RuntimeError(f"mail server said no to {event.n}")
        with ctx.transaction() as conn:
            bump(conn, scope, event.n)

    group = new_group(kafka.bootstrap_servers, ("flaky-outside",))
    topic = group.topics[0]
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(topic, 1), ping(topic, 2)])
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.processed == 1 and worker.stats.failed == 1)
        [failed] = failed_rows(engine, group.name)
        assert (failed.job_name, failed.reason, failed.attempts) == (
            "flaky-outside",
            "exception",
            2,
        )
        assert "mail server said no to 2" in failed.exception_message
        states = {r.message_id: (r.status, r.attempts) for r in inbox_rows(engine, group.name)}
        assert sorted(states.values()) == [("done", 2), ("failed", 2)]
        broken.clear()
        with engine.begin() as conn:
            retry(conn, FailedFilter(group=group.name), {group.name: group}, shards=SHARDS)
        wait_for(lambda: worker.stats.processed == 2, what="the operator's retry")
    assert effects(engine, scope) == {1: 1, 2: 1}
    assert attempts == Counter({1: 2, 2: 3})
    assert failed_rows(engine, group.name) == []
    assert sorted((r.status, r.attempts) for r in inbox_rows(engine, group.name)) == [
        ("done", 1),
        ("done", 2),
    ]


def test_an_outside_job_asking_for_the_batch_connection_fails_with_a_clear_reason(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    registry = JobRegistry()

    @job("uses-connection", on=Pinged, tries=1, transactional=False, registry=registry)
    def uses_connection(event: Pinged, ctx: JobContext) -> None:
        ctx.connection  # noqa: B018 - the access itself is what fails

    group = new_group(kafka.bootstrap_servers, ("uses-connection",))
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(group.topics[0], 1)])
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.failed == 1)
    [failed] = failed_rows(engine, group.name)
    assert failed.exception_class.endswith("NoBatchTransaction")
    assert "job 'uses-connection' is declared transactional=False" in failed.exception_message
    assert "ctx.transaction()" in failed.exception_message


def test_outside_jobs_a_stopping_worker_did_not_run_are_run_once_by_the_next_worker(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    """The worker stops while its batch's outside jobs wait: their offsets are not
    committed, so the next worker runs them, and the ones already run are duplicates."""
    scope = uuid.uuid4().hex
    registry = JobRegistry()
    calls: Counter[int] = Counter()
    started = threading.Event()

    @job("slow-outside", on=Pinged, transactional=False, registry=registry)
    def slow_outside(event: Pinged, ctx: JobContext) -> None:
        calls[event.n] += 1
        started.set()
        time.sleep(0.2)
        with ctx.transaction() as conn:
            bump(conn, scope, event.n)

    group = new_group(kafka.bootstrap_servers, ("slow-outside",))
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(group.topics[0], n) for n in range(10)])
        h.start_relay()
        wait_for(lambda: pending(engine) == 0, what="all published: one batch")
        first = h.start_worker()
        assert started.wait(20)
        h.stop(first)
        assert first.stats.processed < 10
        h.start_worker()
        wait_for(lambda: len(effects(engine, scope)) == 10, what="the rest, on the next worker")
    assert effects(engine, scope) == dict.fromkeys(range(10), 1)
    assert calls == Counter(dict.fromkeys(range(10), 1))
