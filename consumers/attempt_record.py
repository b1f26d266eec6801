"""The attempt record: one attempt of one job on one message, as the attempt path
(consumers._internal.attempt_path) and every middleware of the worker's stack see it.

It sits below the middleware and the engine both: the middleware reads and marks it (a
failure's reason, whether it is final), the engine creates it and records its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumers.context import JobContext
    from consumers.incoming import Incoming
    from consumers.job import Job

__all__ = ["Attempt", "Line"]

Line = dict[str, Any]
"""One `job_handled` log line (and the metrics' input)."""


@dataclass(slots=True)
class Attempt:
    incoming: Incoming
    job: Job
    now: datetime
    ctx: JobContext | None = None
    began: float = 0.0
    ended: float = 0.0  # when the handler returned (its outcome may be recorded later)
    error: BaseException | None = None
    reason: str = ""
    message: str = ""
    final: bool = False  # set by the retries middleware when a failure is for good
    permanent: bool = False  # no retry can change it (consumers.errors.permanent)
    replace_worker: bool = False  # its process may hold a wedged resource
    line: Line | None = None  # its job_handled line, once recorded
    armed: int = 0  # the time limit's handle
    earlier: Any = None  # the inbox row found when recording in a scope of its own

    @property
    def handled(self) -> Line:
        """Its line (the attempt path records one for every attempt it returns)."""
        assert self.line is not None  # noqa: S101 - set before run() or record() returns
        return self.line

    @property
    def key(self) -> tuple[str, str]:
        return (self.job.name, self.incoming.message_id)
