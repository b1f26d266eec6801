"""The `transactional=False` jobs of a batch, run after it committed.

They run in order, each through the attempt path with a scope of its own (no transaction
open while the job runs). Their inbox rows are read in one query up front, and their
outcomes are recorded in rounds: one transaction for up to ROUND_SIZE attempts, or for
those that ran within ROUND_S. One commit per attempt was most of the cost of a short
outside-the-transaction job (campaign e-mails: inbox read, record, commit per message). The
price is a wider window for a crash: the attempts of an unrecorded round run again, which
such a job must bear anyway (it is idempotent by itself, see consumers.job). A round whose
transaction fails is recorded again one attempt per transaction; a job timing out is
recorded at once (the worker is to be replaced, nothing more runs).

Those not run or not recorded now (the worker stopping, the poll budget spent, the database
refusing) are handled again: their records go back to be fetched, or to the delayed
retries for a retry that was held, and the offsets stay below them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.exc import StatementError

from consumers._internal.attempt_path import AttemptPath, OwnScope
from consumers._internal.held_retries import DelayedRetries
from consumers._internal.poll_batch import Item, Outcome
from consumers.attempt_record import Attempt
from consumers.context import JobTimeout
from consumers.incoming import Incoming

__all__ = ["ROUND_S", "ROUND_SIZE", "run_deferred"]

log = structlog.get_logger("consumers._internal.after_commit")

ROUND_SIZE = 100
ROUND_S = 0.5


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
    todo = out.deferred
    try:
        scope.prefetch([(declared.name, inc.message_id) for inc, declared in todo])
    except StatementError as exc:
        _not_recorded(scope, todo[0], exc)
        _requeue(out, todo, delayed, clock)
        stopping.wait(1.0)
        return
    pending: list[tuple[int, Attempt]] = []
    round_began = time.monotonic()
    group_end = 0  # a lookahead group runs to its end (consumers.middleware.lookahead)
    for index, (inc, declared) in enumerate(todo):
        late = index > 0 and time.monotonic() - started > budget_s
        between = index >= group_end
        if out.replace or (between and (stopping.is_set() or late)):
            unrecorded = _flush(path, scope, out, pending)
            _requeue(out, unrecorded + todo[index:], delayed, clock)
            return
        if between:
            group_end = _group_end(todo, index)
        upcoming = tuple(i.event for i, _ in todo[index + 1 : group_end] if i.event is not None)
        try:
            attempt = path.run(scope, inc, declared, clock(), record=False, upcoming=upcoming)
        except StatementError as exc:  # reading its inbox row
            _not_recorded(scope, todo[index], exc)
            unrecorded = _flush(path, scope, out, pending)
            _requeue(out, unrecorded + todo[index:], delayed, clock)
            stopping.wait(1.0)
            return
        if attempt.line is not None:  # a duplicate: not run
            out.lines.append(attempt.handled)
            continue
        if not pending:
            round_began = time.monotonic()
        pending.append((index, attempt))
        due = len(pending) >= ROUND_SIZE or time.monotonic() - round_began >= ROUND_S
        if due or isinstance(attempt.error, JobTimeout):
            unrecorded = _flush(path, scope, out, pending)
            pending = []
            if unrecorded:
                _requeue(out, unrecorded + todo[index + 1 :], delayed, clock)
                stopping.wait(1.0)
                return
    unrecorded = _flush(path, scope, out, pending)
    if unrecorded:
        _requeue(out, unrecorded, delayed, clock)
        stopping.wait(1.0)


def _group_end(todo: list[tuple[Incoming, Any]], index: int) -> int:
    """The end of the lookahead group starting at `index`: up to `lookahead` more messages
    of the same job, in a row."""
    name = todo[index][1].name
    end, last = index + 1, min(len(todo), index + 1 + todo[index][1].option("lookahead"))
    while end < last and todo[end][1].name == name:
        end += 1
    return end


def _flush(
    path: AttemptPath, scope: OwnScope, out: Outcome, pending: list[tuple[int, Attempt]]
) -> list[tuple[Incoming, Any]]:
    """Record the round's outcomes; returns the attempts whose outcome was not recorded."""
    if not pending:
        return []
    attempts = [a for _, a in pending]
    try:
        path.record_round(scope, attempts)
    except Exception as exc:  # whatever broke it: record them one by one
        log.warning(
            "consumer_deferred_round_not_recorded",
            group=scope.group,
            attempts=len(attempts),
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
        return _record_each(path, scope, out, attempts)
    for attempt in attempts:
        out.lines.append(attempt.handled)
        out.replace = out.replace or attempt.replace_worker
    return []


def _record_each(
    path: AttemptPath, scope: OwnScope, out: Outcome, attempts: list[Attempt]
) -> list[tuple[Incoming, Any]]:
    unrecorded: list[tuple[Incoming, Any]] = []
    for attempt in attempts:
        try:
            path.record(scope, attempt)
        except Exception as exc:  # handled again: the job is idempotent
            _not_recorded(scope, (attempt.incoming, attempt.job), exc)
            unrecorded.append((attempt.incoming, attempt.job))
            continue
        out.lines.append(attempt.handled)
        out.replace = out.replace or attempt.replace_worker
    return unrecorded


def _not_recorded(scope: OwnScope, item: tuple[Incoming, Any], exc: Exception) -> None:
    inc, declared = item
    log.warning(
        "consumer_deferred_job_not_recorded",
        group=scope.group,
        job=declared.name,
        event_id=inc.event_id,
        error=str(getattr(exc, "orig", exc))[:300],
    )


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
