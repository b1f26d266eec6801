"""A scheduled job and its group for tests that run `outbox scheduler` or `outbox schedule`
(loaded through CONSUMER_MODULES=tests.scheduler_jobs; importing it adds the group to the
process's catalog, so tests import names from tests.scheduler_helpers instead)."""

from __future__ import annotations

from consumers import JobContext, add_group, job
from consumers.messages import ScheduledJobDue
from tests.scheduler_helpers import E2E_JOB, E2E_TEST_GROUP


@job(E2E_JOB, on=ScheduledJobDue, tries=1)
def tick(event: ScheduledJobDue, ctx: JobContext) -> None:  # pragma: no cover - never consumed
    return None


add_group(E2E_TEST_GROUP)
