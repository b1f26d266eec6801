"""Messages the runtime itself sends to jobs, and the one the scheduler sends.

`BatchFinished`: a fan-out's follow-up (then / catch / finally) receives this summary.
`ScheduledJobDue`: one message per scheduler firing, on the job's group's `<group>.jobs`
topic, naming the job in its `x-job` header. The scheduler (scheduler/) imports no consumer
code: the composition root hands it a dispatch function that builds this event, so the
message contract lives here, next to the runtime that delivers it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AwareDatetime, Field

from domain.events import DomainEvent, event

__all__ = ["BatchFinished", "ScheduledJobDue"]


@event
class BatchFinished(DomainEvent):
    """A batch's follow-up (then / catch / finally) receives this summary."""

    TYPE = "job.batch_finished"
    batch_id: str
    name: str
    total: int
    failed: int


@event
class ScheduledJobDue(DomainEvent):
    TYPE = "scheduler.job_due"
    job: str = Field(min_length=1, max_length=100)
    # The trigger time this firing stands for (UTC); the moment itself for a manual run.
    slot: AwareDatetime
    # Operator-given narrowing, e.g. {"tenant_id": "t-1"} (`outbox schedule run --tenant`).
    params: dict[str, str] = Field(default_factory=dict)
    manual: bool = False

    @property
    def utc_slot(self) -> datetime:
        return self.slot.astimezone(UTC)
