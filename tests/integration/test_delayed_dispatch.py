"""Delayed dispatch: `Dispatcher.dispatch(delay=)` and `ctx.dispatch(delay=)` write the job's
outbox row with a later `available_at`; the relay publishes it no earlier, and never lets a
later row of the same key overtake it. The relay and the dispatcher share an injected
clock, so "no earlier than its time" is checked at the instant, not with sleeps."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from consumers import Group, JobContext, JobRegistry, job
from consumers.context import OwnTransactionsContext
from consumers.dispatch import MAX_DELAY, Dispatcher, InvalidDelay, check_delay
from domain import CommandBus
from jobs.config import AppConfig
from outbox import outbox_table
from outbox.schema import job_locks_table
from relay import Relay, RelayConfig
from tests.consumer_harness import Pinged, bump, effects, harness, new_group, wait_for
from tests.fakes import InMemoryPublisher

pytestmark = pytest.mark.integration
SHARDS = 4
# After the real clock: rows dispatched without a delay carry the writer's real time and
# must be due at T0.
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
o = outbox_table


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _setup(clock: Clock) -> tuple[Group, JobRegistry, Dispatcher]:
    registry = JobRegistry()

    @job("later", on=Pinged, registry=registry)
    def later(event: Pinged, ctx: JobContext) -> None:
        """Never run here: these tests stop at the relay."""

    @job(
        "later-unique",
        on=Pinged,
        registry=registry,
        unique_key=lambda e: str(e.n),
        unique_for_s=60,
    )
    def later_unique(event: Pinged, ctx: JobContext) -> None:
        """Never run here."""

    group = Group(f"g-{uuid.uuid4().hex[:8]}", topics=(), jobs=("later", "later-unique"))
    return group, registry, Dispatcher([group], registry, shards=SHARDS, clock=clock)


def _relay_once(engine: Engine, publisher: InMemoryPublisher, clock: Clock) -> None:
    config = RelayConfig(shards=SHARDS, lease_ttl_s=5.0, poll_max_s=0.05)
    Relay(engine, lambda: publisher, config, clock=clock).run(once=True)


def _published(publisher: InMemoryPublisher, topic: str) -> list[int]:
    return [json.loads(m.value)["n"] for m in publisher.messages(topic)]


def test_a_delayed_job_is_published_no_earlier_than_its_time_and_keeps_its_key_order(
    engine: Engine,
) -> None:
    clock = Clock(T0)
    group, _, dispatcher = _setup(clock)
    publisher = InMemoryPublisher(topics={group.jobs_topic: 3})
    with engine.begin() as conn:
        dispatcher.dispatch(conn, "later", Pinged(n=1), key="k", delay=timedelta(minutes=10))
        dispatcher.dispatch(conn, "later", Pinged(n=2), key="k")  # same key, due at once
        dispatcher.dispatch(conn, "later", Pinged(n=3), key="other")
    with engine.connect() as conn:
        first = conn.execute(select(o.c.created_at, o.c.available_at).order_by(o.c.id)).first()
    assert first is not None and (first.created_at, first.available_at) == (
        T0,
        T0 + timedelta(minutes=10),
    )

    _relay_once(engine, publisher, clock)
    assert _published(publisher, group.jobs_topic) == [3]  # 2 waits behind the delayed 1

    clock.at = T0 + timedelta(minutes=10) - timedelta(microseconds=1)
    _relay_once(engine, publisher, clock)
    assert _published(publisher, group.jobs_topic) == [3]

    clock.at = T0 + timedelta(minutes=10)
    _relay_once(engine, publisher, clock)
    assert _published(publisher, group.jobs_topic) == [3, 1, 2]
    with engine.connect() as conn:
        rows = conn.execute(select(o.c.status, o.c.published_at, o.c.available_at)).all()
    assert all(r.status == "published" and r.published_at >= r.available_at for r in rows)


@pytest.mark.slow
def test_due_jobs_behind_more_delayed_keys_than_a_claim_can_skip_are_published(
    engine: Engine,
) -> None:
    """ADR 010's starvation: 1,600 delayed jobs of distinct keys at the shards' heads (the
    claim skips at most 500 held-back keys, and each shard's quota is 25 here) used to
    hide the due jobs behind them until the delays passed. They go out at once now, a due
    row whose key's earlier row is delayed still waits, and nothing delayed goes early."""
    clock = Clock(T0)
    group, _, dispatcher = _setup(clock)
    publisher = InMemoryPublisher(topics={group.jobs_topic: 3})
    later = timedelta(minutes=10)
    with engine.begin() as conn:
        for n in range(1_600):
            dispatcher.dispatch(conn, "later", Pinged(n=10_000 + n), key=f"d-{n}", delay=later)
        for n in range(10):
            dispatcher.dispatch(conn, "later", Pinged(n=n), key=f"due-{n}")
        dispatcher.dispatch(conn, "later", Pinged(n=99), key="d-7")  # behind its delayed row
    config = RelayConfig(shards=SHARDS, lease_ttl_s=5.0, poll_max_s=0.05, batch_size=100)
    relay = Relay(engine, lambda: publisher, config, clock=clock)
    relay.run(once=True)
    assert sorted(_published(publisher, group.jobs_topic)) == list(range(10))
    assert relay.stats.starved_claims >= 1

    clock.at = T0 + later
    Relay(engine, lambda: publisher, config, clock=clock).run(once=True)
    published = _published(publisher, group.jobs_topic)
    assert len(published) == 10 + 1_600 + 1
    assert published.index(99) > published.index(10_007)  # d-7's order kept


def test_a_delayed_batch_waits_as_a_whole(engine: Engine) -> None:
    clock = Clock(T0)
    group, _, dispatcher = _setup(clock)
    publisher = InMemoryPublisher(topics={group.jobs_topic: 3})
    with engine.begin() as conn:
        dispatcher.dispatch_batch(
            conn, "fan-out", "later", [Pinged(n=n) for n in range(5)], delay=timedelta(hours=1)
        )
    _relay_once(engine, publisher, clock)
    assert _published(publisher, group.jobs_topic) == []
    clock.at = T0 + timedelta(hours=1)
    _relay_once(engine, publisher, clock)
    assert sorted(_published(publisher, group.jobs_topic)) == [0, 1, 2, 3, 4]


def test_a_delayed_unique_job_holds_its_lock_from_when_it_is_due(engine: Engine) -> None:
    clock = Clock(T0)
    _, _, dispatcher = _setup(clock)
    with engine.begin() as conn:
        first = dispatcher.dispatch(conn, "later-unique", Pinged(n=7), delay=timedelta(hours=2))
    # Two hours later, well past unique_for_s (60 s) after the dispatch, the job has not
    # run yet: a second dispatch is still refused.
    clock.at = T0 + timedelta(hours=2)
    with engine.begin() as conn:
        second = dispatcher.dispatch(conn, "later-unique", Pinged(n=7))
        expires = conn.execute(select(job_locks_table.c.expires_at)).scalar_one()
    assert first is not None and second is None
    assert expires == T0 + timedelta(hours=2, seconds=60)


@pytest.mark.parametrize(
    ("delay", "words"),
    [
        (timedelta(seconds=-1), "is negative"),
        (MAX_DELAY + timedelta(seconds=1), "longer than 30 days"),
        (600, "must be a datetime.timedelta, not int"),
        ("10m", "must be a datetime.timedelta, not str"),
    ],
)
def test_a_bad_delay_is_refused_and_writes_nothing(engine: Engine, delay: Any, words: str) -> None:
    clock = Clock(T0)
    _, _, dispatcher = _setup(clock)
    with pytest.raises(InvalidDelay, match=words), engine.begin() as conn:
        dispatcher.dispatch(conn, "later-unique", Pinged(n=1), delay=delay)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(o)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(job_locks_table)).scalar_one() == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seconds=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_any_delay_is_accepted_exactly_within_its_bounds(seconds: float) -> None:
    delay = timedelta(seconds=seconds)
    if timedelta(0) <= delay <= MAX_DELAY:
        assert check_delay(delay) == delay
    else:
        with pytest.raises(InvalidDelay):
            check_delay(delay)


def _details(engine: Engine, dispatcher: Dispatcher, clock: Clock) -> dict[str, Any]:
    """What the runtime gives a job context (a parent job's message)."""
    return {
        "group": "g",
        "job": "parent",
        "event_id": str(uuid.uuid4()),
        "message_id": str(uuid.uuid4()),
        "key": "k",
        "attempt": 1,
        "headers": {"correlation_id": "corr-1"},
        "now": clock(),
        "bus": CommandBus(engine, shards=SHARDS),
        "dispatcher": dispatcher,
        "config": AppConfig(),
    }


def test_both_job_contexts_dispatch_with_a_delay(engine: Engine) -> None:
    clock = Clock(T0)
    _, _, dispatcher = _setup(clock)
    own = OwnTransactionsContext(engine, **_details(engine, dispatcher, clock))
    own.dispatch("later", Pinged(n=1), delay=timedelta(minutes=5))
    with engine.begin() as conn:
        in_batch = JobContext(conn, **_details(engine, dispatcher, clock))
        in_batch.dispatch("later", Pinged(n=2), delay=timedelta(minutes=7))
        in_batch.settle(ok=True)
        with pytest.raises(InvalidDelay):
            in_batch.dispatch("later", Pinged(n=3), delay=timedelta(days=-1))
    with engine.connect() as conn:
        rows = conn.execute(select(o.c.payload, o.c.available_at).order_by(o.c.id)).all()
    assert [(json.loads(r.payload)["n"], r.available_at - T0) for r in rows] == [
        (1, timedelta(minutes=5)),
        (2, timedelta(minutes=7)),
    ]


def test_a_job_dispatched_with_a_delay_runs_after_its_time_through_kafka(
    postgres_db: Engine, kafka: Any
) -> None:
    """End to end with the real clock: the follow-up's inbox row is written after its
    outbox row became due (a lower bound, not a duration)."""
    registry = JobRegistry()
    scope = uuid.uuid4().hex

    @job("parent", on=Pinged, registry=registry)
    def parent(event: Pinged, ctx: JobContext) -> None:
        ctx.dispatch("child", Pinged(n=event.n + 100), delay=timedelta(seconds=1.5))

    @job("child", on=Pinged, registry=registry)
    def child(event: Pinged, ctx: JobContext) -> None:
        bump(ctx.connection, scope, event.n)

    group = new_group(kafka.bootstrap_servers, ("parent", "child"))
    with harness(postgres_db, kafka.bootstrap_servers, group, registry) as h:
        h.in_transaction(lambda c: h.dispatcher.dispatch(c, "parent", Pinged(n=1)))
        h.start_relay()
        h.start_worker()
        wait_for(lambda: effects(postgres_db, scope) == {101: 1}, timeout_s=30, what="child")
    from outbox.schema import inbox_table as i

    with postgres_db.connect() as conn:
        delayed = conn.execute(
            select(o.c.event_id, o.c.created_at, o.c.available_at, o.c.published_at).where(
                o.c.available_at > o.c.created_at
            )
        ).one()
        ran_at = conn.execute(
            select(i.c.processed_at).where(i.c.message_id == delayed.event_id)
        ).scalar_one()
    assert delayed.available_at - delayed.created_at == timedelta(seconds=1.5)
    assert delayed.published_at >= delayed.available_at
    assert ran_at >= delayed.available_at
