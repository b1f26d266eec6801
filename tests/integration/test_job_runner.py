"""consumers.testing: one job through the real attempt path, with no broker, on every
backend (the `engine` fixture: SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from consumers import DoNotRetry, Group, JobContext, JobRegistry, job
from consumers.testing import JobRunner, record_of, run_job
from domain.events import DomainEvent, EventRegistry
from outbox.schema import failed_jobs_table, inbox_table
from relay.messages import to_message
from tests.consumer_harness import bump, effects

EVENTS = EventRegistry()


@EVENTS.register
class Poked(DomainEvent):
    TYPE = "test.poked"
    n: int


@EVENTS.register
class Tidy(DomainEvent):
    TYPE = "test.tidy"
    n: int


SEEN: list[dict[str, Any]] = []


def _registry() -> tuple[JobRegistry, Group]:
    registry = JobRegistry()

    @job("count", on=Poked, registry=registry)
    def count(event: Poked, ctx: JobContext) -> None:
        SEEN.append({"tenant": ctx.tenant_id, "at": ctx.occurred_at, "attempt": ctx.attempt})
        bump(ctx.connection, "count", event.n)
        if event.n == 7:
            ctx.dispatch("tidy", Tidy(n=event.n))

    @job("tidy", on=Tidy, registry=registry)
    def tidy(event: Tidy, ctx: JobContext) -> None:
        bump(ctx.connection, "tidy", event.n)

    @job("refuse", on=Poked, registry=registry, tries=3)
    def refuse(event: Poked, ctx: JobContext) -> None:
        bump(ctx.connection, "refuse", event.n)  # rolled back with its savepoint
        raise DoNotRetry(f"message {event.n} can never work")

    @job("flaky", on=Poked, registry=registry, tries=3, backoff=(60,))
    def flaky(event: Poked, ctx: JobContext) -> None:
        bump(ctx.connection, "flaky", event.n)
        raise ConnectionError(f"down at attempt {ctx.attempt}")

    @job("outside", on=Poked, registry=registry, transactional=False)
    def outside(event: Poked, ctx: JobContext) -> None:
        with ctx.transaction() as conn:
            bump(conn, "outside", event.n)

    @job("slow", on=Poked, registry=registry, tries=1, timeout_s=0.3)
    def slow(event: Poked, ctx: JobContext) -> None:
        bump(ctx.connection, "slow", event.n)
        for _ in range(500):  # 5 s in short sleeps: the time limit lands between them
            time.sleep(0.01)

    group = Group(f"g-{uuid.uuid4().hex[:8]}", topics=("test-pokes",), jobs=tuple(registry.names()))
    return registry, group


def _runner(engine: Engine | Connection) -> JobRunner:
    registry, group = _registry()
    return JobRunner(engine, registry=registry, groups=[group], events=EVENTS)


def _failed(engine: Engine, job_name: str) -> list[Any]:
    f = failed_jobs_table
    with engine.connect() as conn:
        return list(conn.execute(select(f).where(f.c.job_name == job_name)).all())


def test_a_job_that_succeeds_writes_its_effect_once_and_its_follow_ups(engine: Engine) -> None:
    runner = _runner(engine)
    SEEN.clear()
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    result = runner.run(
        "count", Poked(n=7), key="k-7", tenant_id="t-1", occurred_at=at, topic="test-pokes"
    )
    assert (result.outcome, result.job, result.attempt) == ("done", "count", 1)
    assert effects(engine, "count") == {7: 1}
    # What a relay would have sent: the job sees the tenant and the event's time.
    assert [{"tenant": "t-1", "at": at, "attempt": 1}] == SEEN
    [follow_up] = result.dispatched
    assert (follow_up.topic, follow_up.type, follow_up.headers["x-job"]) == (
        f"{runner.group_of('tidy').name}.jobs",
        "test.tidy",
        "tidy",
    )
    assert follow_up.payload == {"n": 7}
    # The follow-up runs when the outbox is drained, as a relay and worker would run it.
    [tidied] = runner.drain()
    assert (tidied.job, tidied.outcome) == ("tidy", "done")
    assert effects(engine, "tidy") == {7: 1}
    assert runner.drain() == []


def test_the_same_event_again_is_a_duplicate_and_not_run(engine: Engine) -> None:
    registry, group = _registry()
    runner = JobRunner(engine, registry=registry, groups=[group], events=EVENTS)
    event_id = str(uuid.uuid4())
    first = runner.run("count", Poked(n=1), event_id=event_id)
    again = runner.run("count", Poked(n=1), event_id=event_id)
    # Another runner (another worker process, say) of the same group.
    worker = JobRunner(engine, registry=registry, groups=[group], events=EVENTS)
    other = worker.run("count", Poked(n=1), event_id=event_id)
    assert (first.outcome, again.outcome, other.outcome) == ("done", "duplicate", "duplicate")
    assert effects(engine, "count") == {1: 1}
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(inbox_table)).scalar_one()
    assert rows == 1


def test_do_not_retry_fails_at_once_with_its_reason(engine: Engine) -> None:
    result = _runner(engine).run("refuse", Poked(n=3), tenant_id="t-2")
    assert (result.outcome, result.reason, result.attempt) == ("failed", "rejected", 1)
    assert result.error == "DoNotRetry: message 3 can never work"
    assert effects(engine, "refuse") == {}
    [failed] = _failed(engine, "refuse")
    assert (failed.reason, failed.attempts) == ("rejected", 1)
    assert "message 3 can never work" in failed.exception_message
    assert [w.topic.endswith(".dlq") for w in result.dispatched] == [True]


def test_a_transient_error_is_retried_then_failed_after_its_tries(engine: Engine) -> None:
    runner = _runner(engine)
    SEEN.clear()
    first = runner.run("flaky", Poked(n=4), key="k-4")
    assert (first.outcome, first.reason, first.attempt) == ("retry", "exception", 1)
    assert first.error == "ConnectionError: down at attempt 1"
    [retry] = first.dispatched
    assert retry.topic.endswith(".retry")
    assert retry.headers["x-attempt"] == "2"
    later = runner.drain()
    assert [(r.outcome, r.attempt) for r in later] == [("retry", 2), ("failed", 3)]
    assert later[-1].error == "ConnectionError: down at attempt 3"
    [failed] = _failed(engine, "flaky")
    assert (failed.reason, failed.attempts) == ("exception", 3)
    assert effects(engine, "flaky") == {}  # every attempt's writes rolled back


def test_a_job_past_its_time_limit_is_stopped_and_failed(engine: Engine) -> None:
    started = time.monotonic()
    result = _runner(engine).run("slow", Poked(n=6))
    assert time.monotonic() - started < 3
    assert (result.outcome, result.attempt) == ("failed", 1)
    assert result.error is not None and result.error.startswith("JobTimeout")
    [failed] = _failed(engine, "slow")
    assert (failed.reason, failed.exception_class) == (result.reason, "JobTimeout")
    assert effects(engine, "slow") == {}


def test_a_job_outside_the_transaction_commits_on_its_own(engine: Engine) -> None:
    runner = _runner(engine)
    event_id = str(uuid.uuid4())
    result = runner.run("outside", Poked(n=5), event_id=event_id)
    assert result.outcome == "done"
    assert effects(engine, "outside") == {5: 1}
    assert runner.run("outside", Poked(n=5), event_id=event_id).outcome == "duplicate"
    assert effects(engine, "outside") == {5: 1}


def test_on_a_connection_the_caller_controls_nothing_commits(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin() as tx:
        runner = _runner(conn)
        assert runner.run("count", Poked(n=2)).outcome == "done"
        assert runner.run("refuse", Poked(n=2)).outcome == "failed"
        seen = conn.execute(select(func.count()).select_from(inbox_table)).scalar_one()
        assert seen == 2
        with pytest.raises(TypeError, match="transactional=False"):
            runner.run("outside", Poked(n=2))
        tx.rollback()
    assert effects(engine, "count") == {}
    assert _failed(engine, "refuse") == []


def test_run_job_with_a_fixed_clock(engine: Engine) -> None:
    registry, group = _registry()
    now = datetime(2026, 5, 1, tzinfo=UTC)
    SEEN.clear()
    result = run_job(
        engine, "count", Poked(n=9), registry=registry, groups=[group], events=EVENTS, now=now
    )
    assert result.outcome == "done"
    assert SEEN[0]["at"] == now  # no occurred_at given: the record's time is the clock's


def test_records_are_what_the_relay_sends() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    headers = {"tenant_id": "acme", "schema_version": "1", "x-job": "j"}
    row = (41, "e-1", "orders", "k-1", 0, "t.x", '{"a":1}', json.dumps(headers), created)
    sent = to_message(row, b"/outbox-pipeline")
    ours = record_of(
        event_id="e-1",
        topic="orders",
        key="k-1",
        type_="t.x",
        payload='{"a":1}',
        headers=headers,
        created_at=created,
        outbox_id=41,
    )
    assert ours.headers == sent.headers
    assert (ours.key, ours.value) == (sent.key, sent.value)
