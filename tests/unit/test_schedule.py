"""The schedule's triggers, slots and overrides (no database)."""

from __future__ import annotations

import pytest

from jobs.schedule import SCHEDULE as DEFAULT_SCHEDULE
from scheduler import Entry, ScheduleError, configured
from tests.scheduler_helpers import at


def test_cron_slots_are_utc_and_exclusive_of_the_start() -> None:
    entry = Entry("j", "*/15 * * * *", grace_s=60)
    assert entry.slots(at("2026-11-22 10:00:00"), at("2026-11-22 10:45:00")) == [
        at("2026-11-22 10:15:00"),
        at("2026-11-22 10:30:00"),
        at("2026-11-22 10:45:00"),
    ]
    assert entry.next_after(at("2026-11-22 23:59:59")) == at("2026-11-23 00:00:00")


def test_interval_slots_count_from_the_epoch_so_every_instance_agrees() -> None:
    entry = Entry("j", "every 7m", grace_s=60)
    first = entry.next_after(at("2026-11-22 10:00:00"))
    assert first is not None
    assert int(first.timestamp()) % 420 == 0
    assert Entry("j", "every 7m", grace_s=60).next_after(at("2026-11-22 10:00:00")) == first


def test_slots_keep_the_newest_when_there_are_too_many() -> None:
    entry = Entry("j", "every 1s", grace_s=60)
    slots = entry.slots(at("2026-11-22 10:00:00"), at("2026-11-22 11:00:00"), limit=10)
    assert len(slots) == 10 and slots[-1] == at("2026-11-22 11:00:00")


def test_the_default_schedule_is_the_documented_one() -> None:
    assert {e.job: e.when for e in DEFAULT_SCHEDULE} == {
        "release-stale-orders": "*/15 * * * *",
        "send-appointment-reminders": "0 * * * *",
        "sync-analytics": "30 0 * * *",
        "prune-outbox": "0 4 * * *",
        "audit-tenant-limits": "0 5 * * *",
        "reconcile-payments": "0 3 * * *",
    }


def test_overrides_change_turn_off_and_add_jobs() -> None:
    entries = {
        e.job: e
        for e in configured(
            {
                "release-stale-orders": "*/5 * * * *",
                "prune-outbox": "off",
                "sync-analytics": {"grace_s": 60, "coalesce": False},
                "extra": {"when": "every 2h"},
            },
            DEFAULT_SCHEDULE,
        )
    }
    assert entries["release-stale-orders"].when == "*/5 * * * *"
    assert entries["release-stale-orders"].grace_s == 600  # kept
    assert "prune-outbox" not in entries
    assert entries["sync-analytics"].when == "30 0 * * *"
    assert (entries["sync-analytics"].grace_s, entries["sync-analytics"].coalesce) == (60, False)
    assert entries["extra"].grace_s == 300


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"prune-outbox": "every 0s"}, "1 second to 366 days"),
        ({"prune-outbox": "every 99999999999999d"}, "1 second to 366 days"),
        ({"prune-outbox": 5}, "neither a trigger text"),
        ({"prune-outbox": {"grace_s": "soon"}}, "grace_s must be a number"),
        ({"prune-outbox": "0 4 * *"}, "crontab"),
        ({"new-job": {"grace_s": 5}}, "give it a 'when'"),
        ({"new-job": "off"}, "nothing to turn off"),
        ({"prune-outbox": {"grace_s": -1}}, "grace_s must be 0 to"),
        ({"prune-outbox": {"every": "1m"}}, "unknown keys"),
    ],
)
def test_bad_overrides_say_which_job_and_why(overrides: dict[str, object], says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        configured(overrides, DEFAULT_SCHEDULE)


def test_a_job_due_message_needs_an_aware_slot_and_reads_it_in_utc() -> None:
    from datetime import datetime, timedelta, timezone

    from pydantic import ValidationError

    from consumers.messages import ScheduledJobDue

    with pytest.raises(ValidationError, match="timezone"):
        ScheduledJobDue(job="j", slot=datetime(2026, 11, 22, 4, 0))
    east = datetime(2026, 11, 22, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert ScheduledJobDue(job="j", slot=east).utc_slot == at("2026-11-21 23:30:00")
