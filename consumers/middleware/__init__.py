"""Per-job options as middleware (consumers.middleware.base says how one is built).

| middleware | options | what it does |
|---|---|---|
| `Priority` | `priority` | the lane the job is meant for (checked against the group) |
| `RateLimit` | `rate_limit` | a token bucket per job and worker process |
| `TimeLimit` | `timeout_s` | `JobTimeout` past it; the worker is replaced afterwards |
| `Retries` | `tries`, `backoff` | retry copy with `x-not-before`, or failed_jobs + DLQ |
| `UniqueLocks` | `unique_key`, `unique_for_s` | releases a unique job's lock when it settles |
| `BatchFollowUps` | | counts fan-out members, dispatches then / catch / finally |
| `BatchEffects` | `apply_batch` | staged effects applied once per batch, in key order |
| `Lookahead` | `lookahead` | a `transactional=False` job sees the messages after it |
| `Metrics` | | handled-message counters and handler durations |

A job naming an option that no middleware declares is refused when it is declared.
"""

from __future__ import annotations

from typing import Any

from consumers.middleware.base import Attempt, Line, Middleware, MiddlewareEnv
from consumers.middleware.batch_effects import BatchEffects
from consumers.middleware.batches import BatchFollowUps
from consumers.middleware.lanes import Priority
from consumers.middleware.lookahead import Lookahead
from consumers.middleware.metrics import Metrics
from consumers.middleware.rate_limit import RateLimit
from consumers.middleware.retries import MAX_TRIES, Retries, longest_backoff
from consumers.middleware.time_limit import TimeLimit
from consumers.middleware.unique import UniqueLocks, lock_for

__all__ = [
    "DEFAULT_STACK",
    "MAX_TRIES",
    "Attempt",
    "Line",
    "Middleware",
    "MiddlewareEnv",
    "build_stack",
    "known_options",
    "lock_for",
    "longest_backoff",
    "prepare_options",
]

# Order matters where hooks depend on one another: the rate limit waits outside the time
# limit; retries decide whether a failure is final before locks and batches settle.
DEFAULT_STACK: tuple[type[Middleware], ...] = (
    Priority,
    RateLimit,
    TimeLimit,
    Retries,
    UniqueLocks,
    BatchFollowUps,
    BatchEffects,
    Lookahead,
    Metrics,
)


def known_options() -> dict[str, Any]:
    """Every declared option with its default."""
    return {name: d for m in DEFAULT_STACK for name, d in m.options.items()}


def prepare_options(job_name: str, given: dict[str, Any], transactional: bool) -> dict[str, Any]:
    """The job's options with defaults filled in, each checked by its middleware."""
    known = known_options()
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(
            f"job {job_name!r}: unknown option(s) {', '.join(unknown)}; "
            f"options are: {', '.join(sorted(known))}"
        )
    options = {**known, **given}
    for middleware in DEFAULT_STACK:
        middleware.prepare(job_name, options, transactional)
    return options


def build_stack(env: MiddlewareEnv) -> tuple[Middleware, ...]:
    return tuple(m(env) for m in DEFAULT_STACK)
