"""A scheduled job and its group for tests that run `outbox scheduler` or `outbox schedule`
(loaded through CONSUMER_MODULES=tests.scheduler_jobs)."""

from __future__ import annotations

import json

from consumers import Group, JobContext, add_group, job
from consumers.scheduled import ScheduledJobDue
from scheduler import DEFAULT_SCHEDULE

GROUP = "sched-e2e"
JOB = "e2e-tick"


@job(JOB, on=ScheduledJobDue, tries=1)
def tick(event: ScheduledJobDue, ctx: JobContext) -> None:  # pragma: no cover - never consumed
    return None


add_group(Group(GROUP, topics=(), jobs=(JOB,)))


def only(**entries: object) -> str:
    """A SCHEDULE value with the default jobs off and these entries on."""
    overrides: dict[str, object] = dict.fromkeys((e.job for e in DEFAULT_SCHEDULE), "off")
    overrides.update({name.replace("_", "-"): value for name, value in entries.items()})
    return json.dumps(overrides)
