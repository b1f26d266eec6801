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

The options' names, defaults and checks are declared in consumers.options (a job naming an
option declared nowhere is refused when it is declared); `BatchFollowUps` is in
consumers.middleware.fan_out, `Priority` in consumers.middleware.priority.
"""

from __future__ import annotations

from consumers.middleware.base import Attempt, Line, Middleware, MiddlewareEnv
from consumers.middleware.batch_effects import BatchEffects
from consumers.middleware.fan_out import BatchFollowUps
from consumers.middleware.lookahead import Lookahead
from consumers.middleware.metrics import Metrics
from consumers.middleware.priority import Priority
from consumers.middleware.rate_limit import RateLimit
from consumers.middleware.retries import Retries
from consumers.middleware.time_limit import TimeLimit
from consumers.middleware.unique import UniqueLocks
from consumers.options import MAX_TRIES, known_options, lock_for, longest_backoff, prepare_options

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


def build_stack(env: MiddlewareEnv) -> tuple[Middleware, ...]:
    return tuple(m(env) for m in DEFAULT_STACK)
