"""The scheduler on real databases with an injected clock: slots fire once, the leader lease
moves on failure, a stale leader is fenced, two forced leaders fire a slot once, misfires
coalesce or are recorded as missed, and operators can run a job now."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from outbox import outbox_table
from outbox.coroner import Examination, examine
from outbox.scheduler_state import leader_state
from outbox.schema import audit_log_table, job_locks_table
from scheduler import Entry, Firing, LeaderLease, Outcome, Scheduler, ScheduleRunner
from tests.kafka_helpers import wait_for
from tests.scheduler_helpers import (
    Clock,
    ForcedLease,
    SchedulerKit,
    at,
    firing_rows,
    outbox_messages,
)

pytestmark = pytest.mark.integration

EVERY_15 = Entry("tidy", "*/15 * * * *", grace_s=600)


@pytest.fixture
def clock() -> Clock:
    return Clock(at("2026-11-22 10:00:00.5"))


@pytest.fixture
def kit(engine: Engine, clock: Clock) -> SchedulerKit:
    return SchedulerKit.create(engine, clock)


def test_a_slot_fires_once_through_the_outbox_at_its_time(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    leader = kit.scheduler([EVERY_15], owner="a")
    assert leader.heartbeat()  # takes the lease and fires the 10:00 slot that is due
    assert leader.fire_due("tidy") == []  # the APScheduler wake-up finds it already fired

    clock.set("2026-11-22 10:14:59")
    assert leader.heartbeat()  # (the runner renews every ttl/3)
    assert leader.fire_due("tidy") == []
    clock.set("2026-11-22 10:15:00.2")
    [fired] = leader.fire_due("tidy")
    assert fired.slot == at("2026-11-22 10:15:00")

    rows = firing_rows(engine, "tidy")
    assert [(r.slot, r.outcome, r.owner) for r in rows] == [
        (at("2026-11-22 10:00:00"), Outcome.DISPATCHED, "a"),
        (at("2026-11-22 10:15:00"), Outcome.DISPATCHED, "a"),
    ]
    messages = outbox_messages(engine, kit.group.jobs_topic)
    assert [payload["slot"] for payload, _ in messages] == [
        "2026-11-22T10:00:00Z",
        "2026-11-22T10:15:00Z",
    ]
    payload, headers = messages[0]
    assert payload == {
        "job": "tidy",
        "slot": "2026-11-22T10:00:00Z",
        "params": {},
        "manual": False,
    }
    assert headers["x-job"] == "tidy"
    sample = leader.metrics.registry.get_sample_value
    assert sample("outbox_scheduler_firings_total", {"job": "tidy", "outcome": "dispatched"}) == 2
    assert sample("outbox_scheduler_leader") == 1
    assert sample("outbox_scheduler_last_fired_timestamp_seconds", {"job": "tidy"}) == (
        at("2026-11-22 10:15:00.2").timestamp()
    )
    with engine.connect() as conn:
        ids = conn.execute(
            select(outbox_table.c.event_id)
            .where(outbox_table.c.topic == kit.group.jobs_topic)
            .order_by(outbox_table.c.id)
        ).scalars()
        assert [r.message_id for r in rows] == list(ids)


def test_the_standby_takes_over_within_the_lease_ttl_and_fires_the_next_slot(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    leader = kit.scheduler([EVERY_15], owner="a", ttl_s=30)
    standby = kit.scheduler([EVERY_15], owner="b", ttl_s=30)
    assert leader.heartbeat()
    assert not standby.heartbeat()

    clock.set("2026-11-22 10:14:50")
    assert leader.heartbeat()  # its last renewal: the lease runs until 10:15:20
    # ... and then the leader dies. At the slot only the standby wakes, and does not lead yet.
    clock.set("2026-11-22 10:15:00.1")
    assert standby.fire_due("tidy") == []
    clock.set("2026-11-22 10:15:10")
    assert not standby.heartbeat()
    clock.set("2026-11-22 10:15:20.5")
    assert standby.heartbeat()  # takes over; its catch-up fires the 10:15 slot, 20 s late

    assert [(r.slot, r.owner) for r in firing_rows(engine, "tidy")] == [
        (at("2026-11-22 10:00:00"), "a"),
        (at("2026-11-22 10:15:00"), "b"),
    ]


def test_a_leader_that_lost_its_lease_is_fenced_and_fires_nothing(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    old = kit.scheduler([EVERY_15], owner="old", ttl_s=30)
    new = kit.scheduler([EVERY_15], owner="new", ttl_s=30)
    assert old.heartbeat()
    clock.set("2026-11-22 10:14:50")  # old paused (GC, VM) past its lease: new took over
    assert new.heartbeat()
    clock.set("2026-11-22 10:15:00.1")
    with capture_logs() as logs:
        assert old.fire_due("tidy") == []  # old still believes it leads: the fence says no
    assert any(e["event"] == "scheduler_firing_fenced" for e in logs)
    assert not old.lease.held
    sample = old.metrics.registry.get_sample_value
    assert sample("outbox_scheduler_firings_total", {"job": "tidy", "outcome": "fenced"}) == 1
    assert sample("outbox_scheduler_leader") == 0
    [fired] = new.fire_due("tidy")
    assert fired.owner == "new"
    assert [r.owner for r in firing_rows(engine, "tidy")] == ["old", "new"]


def test_two_forced_leaders_fire_each_slot_once(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    one = kit.scheduler([EVERY_15], owner="one", lease=ForcedLease)
    two = kit.scheduler([EVERY_15], owner="two", lease=ForcedLease)
    one.heartbeat()
    two.heartbeat()
    for slot in ("10:15", "10:30", "10:45"):
        clock.set(f"2026-11-22 {slot}:00.3")
        start = threading.Barrier(2)
        fired: list[object] = []

        def fire(scheduler: Scheduler, start: threading.Barrier, fired: list[object]) -> None:
            start.wait()
            fired.extend(scheduler.fire_due("tidy"))

        threads = [threading.Thread(target=fire, args=(s, start, fired)) for s in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(fired) == 1, f"slot {slot} fired {len(fired)} times"

    rows = firing_rows(engine, "tidy")
    assert [r.slot.strftime("%H:%M") for r in rows] == ["10:00", "10:15", "10:30", "10:45"]
    assert len(outbox_messages(engine, kit.group.jobs_topic)) == 4  # one message per slot


def test_missed_slots_within_grace_coalesce_into_one_firing(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    entry = Entry("tidy", "*/15 * * * *", grace_s=3600)
    kit.scheduler([entry], owner="a").heartbeat()  # fires 10:00, then every scheduler stops
    clock.set("2026-11-22 10:50:00")
    with capture_logs() as logs:
        assert kit.scheduler([entry], owner="b").heartbeat()
    fired = firing_rows(engine)[-1]
    assert fired.slot == at("2026-11-22 10:45:00")
    assert fired.coalesced == 2
    coalesced = [e for e in logs if e["event"] == "scheduler_slots_coalesced"]
    assert coalesced[0]["skipped"] == ["2026-11-22T10:15:00+00:00", "2026-11-22T10:30:00+00:00"]
    assert len(outbox_messages(engine, kit.group.jobs_topic)) == 2  # 10:00 and 10:45


def test_without_coalesce_each_late_slot_fires(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    entry = Entry("tidy", "*/15 * * * *", grace_s=3600, coalesce=False)
    kit.scheduler([entry], owner="a").heartbeat()
    clock.set("2026-11-22 10:50:00")
    kit.scheduler([entry], owner="b").heartbeat()
    assert [r.slot.strftime("%H:%M") for r in firing_rows(engine)] == [
        "10:00",
        "10:15",
        "10:30",
        "10:45",
    ]


def test_slots_past_their_grace_are_logged_and_recorded_as_missed_once(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    daily = Entry("tidy", "0 4 * * *", grace_s=3600)
    clock.set("2026-11-20 04:00:01")
    kit.scheduler([daily], owner="a").heartbeat()
    clock.set("2026-11-22 10:00:00")  # down for two 04:00 slots, both past the 1 h grace
    later = kit.scheduler([daily], owner="b")
    with capture_logs() as logs:
        assert later.heartbeat()
    [missed_log] = [e for e in logs if e["event"] == "scheduler_slots_missed"]
    assert missed_log["missed"] == 2
    sample = later.metrics.registry.get_sample_value
    assert sample("outbox_scheduler_missed_slots_total", {"job": "tidy"}) == 2
    assert sample("outbox_scheduler_firings_total", {"job": "tidy", "outcome": "missed"}) == 1
    assert missed_log["first"] == "2026-11-21T04:00:00+00:00"
    rows = firing_rows(engine)
    assert [(r.slot.strftime("%d %H:%M"), r.outcome) for r in rows] == [
        ("20 04:00", Outcome.DISPATCHED),
        ("22 04:00", Outcome.MISSED),
    ]
    assert rows[-1].message_id is None
    assert len(outbox_messages(engine, kit.group.jobs_topic)) == 1
    with capture_logs() as again:
        assert later.fire_due("tidy") == []
    assert not [e for e in again if e["event"] == "scheduler_slots_missed"]


def test_a_job_that_never_fired_does_not_replay_old_slots(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    daily = Entry("tidy", "0 4 * * *", grace_s=3600)
    assert kit.scheduler([daily], owner="a").heartbeat()  # 10:00: today's 04:00 is past grace
    assert firing_rows(engine) == []


def test_a_clean_stop_hands_the_lease_over_at_once(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    leader = kit.scheduler([EVERY_15], owner="a", ttl_s=300)
    standby = kit.scheduler([EVERY_15], owner="b", ttl_s=300)
    assert leader.heartbeat()
    assert not standby.heartbeat()
    leader.lease.release()
    assert standby.heartbeat()
    assert not leader.lease.held


def test_an_operator_runs_a_job_now_audited_and_a_unique_job_is_not_queued_twice(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    nobody_leads = kit.scheduler([EVERY_15], owner="cli")
    first = nobody_leads.run_now(
        "tidy-daily", params={"tenant_id": "t-1"}, actor="alice", reason="incident 42"
    )
    assert first.outcome == Outcome.DISPATCHED and first.message_id
    clock.advance(1)
    second = nobody_leads.run_now("tidy-daily", actor="alice")
    assert second.outcome == Outcome.LOCKED and second.message_id is None

    [(payload, headers)] = outbox_messages(engine, kit.group.jobs_topic)
    assert payload["params"] == {"tenant_id": "t-1"} and payload["manual"] is True
    assert headers["x-unique-key"] == "2026-11-22"
    with engine.connect() as conn:
        audit = conn.execute(select(audit_log_table).order_by(audit_log_table.c.id)).all()
        locks = conn.execute(select(job_locks_table)).all()
    assert [(a.actor, a.action, a.target, a.reason) for a in audit] == [
        ("alice", "schedule-run", "job:tidy-daily", "incident 42"),
        ("alice", "schedule-run", "job:tidy-daily", None),
    ]
    assert len(locks) == 1
    assert [r.manual for r in firing_rows(engine)] == [True, True]
    # Manual runs are not the schedule's slots: the 10:00 slot still fires (and finds the lock).
    assert kit.scheduler([Entry("tidy-daily", "*/15 * * * *", grace_s=600)], owner="a").heartbeat()
    assert [(r.manual, r.outcome) for r in firing_rows(engine)] == [
        (False, Outcome.LOCKED),  # 10:00:00
        (True, Outcome.DISPATCHED),  # 10:00:00.5
        (True, Outcome.LOCKED),  # 10:00:01.5
    ]


def test_a_firing_that_fails_midway_leaves_nothing_and_the_next_wake_up_fires_it(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    broken = {"left": 1}

    def dispatch(conn: Connection, firing: Firing) -> str | None:
        message_id = kit.dispatch(conn, firing)  # the outbox row is written...
        if broken["left"]:
            broken["left"] -= 1
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return message_id

    leader = Scheduler(
        engine,
        [EVERY_15],
        dispatch,
        lease=LeaderLease(engine, owner="a", ttl_s=30, clock=clock),
        clock=clock,
    )
    with pytest.raises(OperationalError):
        leader.heartbeat()  # ...and rolled back with the firing row
    assert firing_rows(engine) == []
    assert outbox_messages(engine, kit.group.jobs_topic) == []
    clock.advance(10)
    assert leader.heartbeat()  # the next renewal catches up
    [fired] = firing_rows(engine)
    assert fired.slot == at("2026-11-22 10:00:00")
    assert len(outbox_messages(engine, kit.group.jobs_topic)) == 1


def test_the_coroner_calls_a_scheduler_that_stopped_leading_stuck(
    kit: SchedulerKit, clock: Clock, engine: Engine
) -> None:
    def coroner(at_time: datetime) -> Examination:
        with engine.connect() as conn:
            return examine(conn, at_time, older_than=timedelta(minutes=5), lease_ttl_s=10)

    assert coroner(clock.now).scheduler_down is None  # never ran: not an alarm
    leader = kit.scheduler([EVERY_15], owner="a", ttl_s=30)
    assert leader.heartbeat()
    # (Stuck for another reason here: the firing's message waits for a relay nobody runs.)
    assert coroner(clock.now + timedelta(seconds=10)).scheduler_down is None
    gone = coroner(clock.now + timedelta(seconds=31))  # the leader died; nobody took over
    assert gone.stuck and gone.scheduler_down is not None
    assert gone.scheduler_down.last_slot == at("2026-11-22 10:00:00")
    leader.lease.release()  # a clean stop of the only scheduler is an alarm too
    assert coroner(clock.now).scheduler_down is not None


def test_the_runner_rides_out_database_errors_and_fires_the_next_slots(
    kit: SchedulerKit, engine: Engine
) -> None:
    """APScheduler wakes the real runner every second; its first renewal and its first
    firing fail (the database went away); it logs both, keeps running, and fires later."""
    failures = {"tick": 1, "dispatch": 1}

    class FlakyLease(LeaderLease):
        def tick(self) -> bool:
            if failures["tick"]:
                failures["tick"] -= 1
                raise OperationalError("UPDATE", {}, Exception("connection refused"))
            return super().tick()

    def dispatch(conn: Connection, firing: Firing) -> str | None:
        if failures["dispatch"]:
            failures["dispatch"] -= 1
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return kit.dispatch(conn, firing)

    every_second = Entry("tidy", "every 1s", grace_s=30)
    scheduler = Scheduler(
        engine,
        [every_second],
        dispatch,
        lease=FlakyLease(engine, owner="flaky", ttl_s=1.5),
    )
    runner = ScheduleRunner(scheduler)
    with capture_logs() as logs:
        runner.start()
        try:
            wait_for(lambda: len(firing_rows(engine)) >= 2, 20, "two firings after the errors")
        finally:
            runner.stop()
    # Both errors were logged (the dispatch one by the catch-up of a renewal, or by a firing)
    # and neither stopped the runner.
    failed = [
        e for e in logs if e["event"] in ("scheduler_heartbeat_failed", "scheduler_firing_failed")
    ]
    assert len(failed) == 2
    assert "connection refused" in failed[0]["error"]
    assert "server closed the connection" in failed[1]["error"]
    assert failures == {"tick": 0, "dispatch": 0}
    rows = firing_rows(engine)
    assert len({r.slot for r in rows}) == len(rows)
    assert len(outbox_messages(engine, kit.group.jobs_topic)) == len(rows)
    with engine.connect() as conn:
        assert leader_state(conn).owner is None  # stop() handed the lease over
