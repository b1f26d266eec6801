"""Schedule entries: which job fires when, and how late it may still fire (the application's
own entries are in jobs/schedule.py; SCHEDULE overrides them).

Every trigger is in UTC and has slots that every instance computes alike (a cron expression,
or an interval counted from the Unix epoch), because a slot is the key of its firing row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.errors import ScheduleError

__all__ = ["Entry", "ScheduleError", "configured", "parse_trigger"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EVERY = re.compile(r"^every\s+([0-9]{1,18})\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Longer intervals or graces are typos (and overflow the date arithmetic long before 1e14 d).
MAX_INTERVAL_S = 366 * 86400
MAX_GRACE_S = 31 * 86400


def parse_trigger(when: str) -> BaseTrigger:
    """`every 15m` (30s, 2h, 1d: counted from the epoch) or a 5-field crontab, in UTC."""
    text = when.strip().lower()
    every = _EVERY.match(text)
    if every:
        seconds = int(every.group(1)) * _UNIT_S[every.group(2)]
        if not 1 <= seconds <= MAX_INTERVAL_S:
            raise ScheduleError(f"{when!r}: an interval must be 1 second to 366 days")
        return IntervalTrigger(seconds=seconds, start_date=EPOCH, timezone=UTC)
    try:
        return CronTrigger.from_crontab(text, timezone=UTC)
    except ValueError as exc:
        raise ScheduleError(
            f"{when!r} is neither 'every <n>s|m|h|d' nor a 5-field crontab "
            f"(minute hour day month weekday, UTC): {exc}"
        ) from None


@dataclass(frozen=True)
class Entry:
    job: str
    # `*/15 * * * *` (crontab, UTC) or `every 15m`.
    when: str
    # A slot found later than this after its time (the scheduler was down) is not fired: it is
    # logged and recorded as missed. Within it, late slots fire.
    grace_s: float
    # Several late slots within grace fire once (for the latest), not once each.
    coalesce: bool = True
    trigger: BaseTrigger = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.job, str) or not 0 < len(self.job) <= 100:
            raise ScheduleError(f"job name {str(self.job)[:120]!r}: 1 to 100 characters")
        if not isinstance(self.when, str) or not 0 < len(self.when) <= 200:
            raise ScheduleError(
                f"{self.job}: 'when' must be a trigger text such as '*/5 * * * *' or 'every 10m'"
            )
        grace = self.grace_s
        if isinstance(grace, bool) or not isinstance(grace, int | float):
            raise ScheduleError(f"{self.job}: grace_s must be a number of seconds")
        if not 0 <= grace <= MAX_GRACE_S:  # also refuses NaN
            raise ScheduleError(f"{self.job}: grace_s must be 0 to {MAX_GRACE_S} seconds")
        if not isinstance(self.coalesce, bool):
            raise ScheduleError(f"{self.job}: coalesce must be true or false")
        object.__setattr__(self, "trigger", parse_trigger(self.when))

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.grace_s)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first slot strictly after `moment`."""
        return self.trigger.get_next_fire_time(None, moment + timedelta(microseconds=1))  # type: ignore[no-any-return]

    def slots(self, after: datetime, until: datetime, limit: int = 10_000) -> list[datetime]:
        """Slots in (after, until], oldest first, at most `limit` (the newest ones)."""
        found: list[datetime] = []
        cursor = after
        while True:
            slot = self.next_after(cursor)
            if slot is None or slot > until:
                return found
            found.append(slot)
            if len(found) > limit:
                del found[0]
            cursor = slot


def configured(overrides: Mapping[str, Any], base: tuple[Entry, ...] = ()) -> tuple[Entry, ...]:
    """The base schedule (the application's, jobs.schedule) with overrides applied (the
    SCHEDULE setting, a JSON object):

    - `"job": "*/5 * * * *"` or `"every 5m"`: another trigger, same grace;
    - `"job": {"when": ..., "grace_s": 60, "coalesce": false}`: any of those;
    - `"job": "off"` (or null): not scheduled (still runnable with `outbox schedule run`);
    - a job not in the base schedule needs "when" (grace defaults to 5 minutes).
    """
    entries = {entry.job: entry for entry in base}
    for job, value in overrides.items():
        if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
            if job not in entries:
                raise ScheduleError(f"{job!r} is not scheduled; nothing to turn off")
            del entries[job]
            continue
        if isinstance(value, str):
            spec: dict[str, Any] = {"when": value}
        elif isinstance(value, dict):
            spec = dict(value)
        else:
            raise ScheduleError(
                f'{job}: {json.dumps(value)[:60]} is neither a trigger text, "off", nor an '
                'object such as {"when": "every 10m", "grace_s": 60}'
            )
        unknown = set(spec) - {"when", "grace_s", "coalesce"}
        if unknown:
            raise ScheduleError(
                f"{job}: unknown keys {sorted(unknown)}; use when, grace_s, coalesce"
            )
        current = entries.get(job)
        try:
            if current is None:
                if "when" not in spec:
                    raise ScheduleError(f"{job!r} is not in the schedule: give it a 'when'")
                entries[job] = Entry(job, **{"grace_s": 300.0, **spec})
            else:
                entries[job] = replace(current, **spec)
        except TypeError as exc:
            raise ScheduleError(f"{job}: {exc}") from None
    return tuple(entries.values())
