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
database call: its batch's connection is gone). The options a middleware reads are declared
(names, defaults, checks) in consumers.options, below the job, so declaring a job loads no
middleware. `Attempt` (consumers.attempt_record) is the record every hook receives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from consumers.attempt_record import Attempt, Line
from consumers.groups import Group
from consumers.metrics import ConsumerMetrics
from domain.events import DomainEvent

__all__ = ["Attempt", "Dispatches", "Line", "Middleware", "MiddlewareEnv", "RunsGroup"]


class RunsGroup(Protocol):
    """The worker's group, as a middleware sees it (consumers.groups.BoundGroup is one)."""

    @property
    def name(self) -> str: ...

    @property
    def group(self) -> Group: ...


class Dispatches(Protocol):
    """What a middleware may dispatch through (consumers.dispatch.Dispatcher is one)."""

    def dispatch(
        self,
        conn: Connection,
        job_name: str,
        message: DomainEvent,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str | None: ...


@dataclass(frozen=True)
class MiddlewareEnv:
    """What a worker's middleware may use."""

    group: RunsGroup
    dispatcher: Dispatches
    metrics: ConsumerMetrics
    shards: int


class Middleware:
    def __init__(self, env: MiddlewareEnv) -> None:
        self.env = env

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
