"""A scheduled job and its group for tests that run `outbox scheduler` or `outbox schedule`
(loaded through CONSUMER_MODULES=tests.scheduler_jobs; importing it adds the group to the
process's catalog, so tests import names from tests.scheduler_helpers instead)."""

from __future__ import annotations

from consumers import Group, JobContext, add_group, job
from consumers.scheduled import ScheduledJobDue
from tests.scheduler_helpers import E2E_GROUP, E2E_JOB


@job(E2E_JOB, on=ScheduledJobDue, tries=1)
def tick(event: ScheduledJobDue, ctx: JobContext) -> None:  # pragma: no cover - never consumed
    return None


add_group(Group(E2E_GROUP, topics=(), jobs=(E2E_JOB,)))
