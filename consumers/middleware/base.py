"""What a middleware is: the options it declares and the hooks the attempt path calls.

One attempt of one job on one message goes through every middleware of the worker's
stack, in order:

    before(a)            before the handler (rate limit)
    start(a) / finish(a) just around the handler call, finish always (time limit)
    classify(a, exc)     a failure's (reason, message), the first middleware that knows it
    succeeded(a, conn)   the attempt succeeded; `conn` is where its outcome is recorded
    failed(a, conn)      it failed: retry later or fail for good (retries, DLQ)
    settled(a, conn, failed=)  done for good, either way (unique locks, batch follow-ups)
    round(conn)          a context manager around the recording of a round of outcomes
    batch_ending(conn)   the batch's transaction is about to commit (batch effects)
    batch_discarded()    the batch's transaction rolled back
    committed(lines)     the batch's outcome is durable (metrics)

`conn` is the batch's transaction for a transactional job, or a short transaction of the
attempt's own for a `transactional=False` job (and for a job whose time ran out inside a
database call: its batch's connection is gone). A middleware's options are declared as a
name -> default mapping and checked in `prepare` when a job is declared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Connection

if TYPE_CHECKING:
    from consumers.context import JobContext
    from consumers.dispatch import Dispatcher
    from consumers.groups import BoundGroup
    from consumers.incoming import Incoming
    from consumers.job import Job
    from consumers.metrics import ConsumerMetrics

__all__ = ["Attempt", "Line", "Middleware", "MiddlewareEnv"]

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


@dataclass(frozen=True)
class MiddlewareEnv:
    """What a worker's middleware may use."""

    group: BoundGroup
    dispatcher: Dispatcher
    metrics: ConsumerMetrics
    shards: int


class Middleware:
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, env: MiddlewareEnv) -> None:
        self.env = env

    @classmethod
    def prepare(cls, job_name: str, options: dict[str, Any], transactional: bool) -> None:
        """Check (and normalise) this middleware's options of a job being declared."""

    def before(self, attempt: Attempt) -> None:
        return

    def start(self, attempt: Attempt) -> None:
        return

    def finish(self, attempt: Attempt) -> None:
        return

    def classify(self, attempt: Attempt, exc: BaseException) -> tuple[str, str] | None:
        return None

    def succeeded(self, attempt: Attempt, conn: Connection) -> None:
        return

    def failed(self, attempt: Attempt, conn: Connection) -> None:
        return

    def settled(self, attempt: Attempt, conn: Connection, *, failed: bool) -> None:
        return

    def round(self, conn: Connection) -> AbstractContextManager[None]:
        return nullcontext()

    def batch_ending(self, conn: Connection) -> None:
        return

    def batch_discarded(self) -> None:
        return

    def committed(self, lines: Sequence[Line]) -> None:
        return


def positive(job_name: str, name: str, value: Any, *, optional: bool = False) -> None:
    """A number > 0 (or None when optional), else a clear error naming job and option."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"job {job_name!r}: {name} must be a number > 0, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"job {job_name!r}: {name} must be finite, not {value!r}")


Check = Callable[[str, dict[str, Any], bool], None]
