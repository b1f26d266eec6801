"""The `transactional=False` jobs of a batch, run after it committed.

They run in order, each through the attempt path with a scope of its own (no transaction
open while the job runs; its outcome recorded in a short transaction). Those not run now
(the worker stopping, the poll budget spent, their outcome not recorded) are handled again:
their records go back to be fetched, or to the delayed retries for a retry that was held,
and the offsets stay below them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.exc import StatementError

from consumers.attempt import AttemptPath, OwnScope
from consumers.batch import Item, Outcome
from consumers.delayed import DelayedRetries
from consumers.incoming import Incoming

__all__ = ["run_deferred"]

log = structlog.get_logger("consumers.deferred")


def run_deferred(
    path: AttemptPath,
    scope: OwnScope,
    out: Outcome,
    *,
    started: float,
    budget_s: float,
    stopping: threading.Event,
    delayed: DelayedRetries[Incoming],
    clock: Callable[[], datetime],
) -> None:
    for index, (inc, declared) in enumerate(out.deferred):
        late = index > 0 and time.monotonic() - started > budget_s
        if stopping.is_set() or out.replace or late:
            _requeue(out, out.deferred[index:], delayed, clock)
            return
        try:
            attempt = path.run(scope, inc, declared, clock())
        except StatementError as exc:
            log.warning(
                "consumer_deferred_job_not_recorded",
                group=scope.group,
                job=declared.name,
                event_id=inc.event_id,
                error=str(getattr(exc, "orig", exc))[:300],
            )
            _requeue(out, out.deferred[index:], delayed, clock)
            stopping.wait(1.0)
            return
        out.lines.append(attempt.handled)
        out.replace = out.replace or attempt.replace_worker


def _requeue(
    out: Outcome,
    unrun: list[tuple[Incoming, Any]],
    delayed: DelayedRetries[Incoming],
    clock: Callable[[], datetime],
) -> None:
    """Deferred jobs not run: their records are handled again (the batch's other jobs
    are duplicates then) and no offset is committed past them."""
    again: dict[int, Incoming] = {id(inc): inc for inc, _ in unrun}
    released = {id(inc) for inc in out.released}
    fetch_again: list[Item] = []
    for inc in again.values():
        if id(inc) in released:  # a retry from memory: it waits there again, still held
            delayed.push(clock(), inc)
        else:
            out.advance[inc.tp] = min(out.advance.get(inc.tp, inc.offset), inc.offset)
            fetch_again.append((inc.record, inc))
    out.released = [inc for inc in out.released if id(inc) not in again]
    # Ahead of the batch's unreached rest: each partition stays in offset order.
    out.rest = fetch_again + out.rest
