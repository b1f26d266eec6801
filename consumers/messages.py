"""Messages the runtime itself sends to jobs."""

from __future__ import annotations

from domain.events import DomainEvent, event

__all__ = ["BatchFinished"]


@event
class BatchFinished(DomainEvent):
    """A batch's follow-up (then / catch / finally) receives this summary."""

    TYPE = "job.batch_finished"
    batch_id: str
    name: str
    total: int
    failed: int
