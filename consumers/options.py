"""Per-job options: their names, defaults and checks, and the helpers that read them.

Each option belongs to the middleware that acts on it (consumers.middleware), but is
declared here, below the job and the middleware both, so declaring a job never loads the
middleware (nor the stores and engine it uses):

| option | default | read by |
|---|---|---|
| `priority` | "default" | `Priority`: the lane the job is meant for |
| `rate_limit` | None | `RateLimit`: a token bucket per job and worker process |
| `timeout_s` | 60 | `TimeLimit`: `JobTimeout` past it |
| `tries`, `backoff` | 3, exponential from 10 s | `Retries`: retry copy or failed_jobs + DLQ |
| `unique_key`, `unique_for_s` | None, None | `UniqueLocks` and the dispatcher (`lock_for`) |
| `apply_batch` | None | `BatchEffects`: staged effects applied once per batch |
| `lookahead` | 0 | `Lookahead`: a `transactional=False` job sees the messages after it |

A job naming an option declared nowhere here is refused when it is declared, as dramatiq
does with `actor_options`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

__all__ = [
    "MAX_LOOKAHEAD",
    "MAX_TRIES",
    "OPTION_SETS",
    "Backoff",
    "OptionSet",
    "exponential",
    "known_options",
    "lock_for",
    "longest_backoff",
    "positive",
    "prepare_options",
]

Backoff = Callable[[int], float]
"""Seconds to wait after failed attempt N (1-based) before attempt N+1."""

# An x-attempt header beyond this is forged (and would overflow the inbox's counter).
MAX_TRIES = 1000
MAX_LOOKAHEAD = 1000

Check = Callable[[str, dict[str, Any], bool], None]
"""(job name, its options with defaults filled in, transactional): raise ValueError, or
normalise the options in place."""


class HasOptions(Protocol):
    """A declared job, as the option helpers see it."""

    def option(self, name: str) -> Any: ...


@dataclass(frozen=True)
class OptionSet:
    """The options one middleware reads: their defaults and their check."""

    middleware: str
    defaults: Mapping[str, Any]
    check: Check


def exponential(base_s: float = 10.0, factor: float = 2.0, max_s: float = 3600.0) -> Backoff:
    """base, base*factor, base*factor^2 ... capped at max_s."""
    return lambda attempt: min(max_s, base_s * factor ** min(attempt - 1, 64))


def positive(job_name: str, name: str, value: Any, *, optional: bool = False) -> None:
    """A number > 0 (or None when optional), else a clear error naming job and option."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"job {job_name!r}: {name} must be a number > 0, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"job {job_name!r}: {name} must be finite, not {value!r}")


def _check_priority(job_name: str, options: dict[str, Any], transactional: bool) -> None:
    if options["priority"] not in ("high", "default"):
        raise ValueError(f"job {job_name!r}: priority is 'high' or 'default'")


def _check_rate_limit(job_name: str, options: dict[str, Any], transactional: bool) -> None:
    positive(job_name, "rate_limit", options["rate_limit"], optional=True)


def _check_timeout(job_name: str, options: dict[str, Any], transactional: bool) -> None:
    positive(job_name, "timeout_s", options["timeout_s"], optional=True)


def _steps(job_name: str, delays: Sequence[Any]) -> Backoff:
    """Fixed steps, the last repeated: (60, 120) waits 60 s, then 120 s, 120 s..."""
    if not delays:
        raise ValueError(f"job {job_name!r}: a backoff needs at least one delay")
    for delay in delays:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise ValueError(f"job {job_name!r}: backoff delays are seconds, not {delay!r}")
        if not 0 <= delay < math.inf:
            raise ValueError(f"job {job_name!r}: backoff delays are >= 0 and finite")
    steps = tuple(float(d) for d in delays)
    return lambda attempt: steps[min(attempt, len(steps)) - 1]


def _check_retries(job_name: str, options: dict[str, Any], transactional: bool) -> None:
    tries = options["tries"]
    if isinstance(tries, bool) or not isinstance(tries, int) or not 1 <= tries <= MAX_TRIES:
        raise ValueError(f"job {job_name!r}: tries must be an integer from 1 to {MAX_TRIES}")
    backoff = options["backoff"]
    if backoff is None:
        options["backoff"] = exponential()
    elif not callable(backoff):
        if isinstance(backoff, str | bytes) or not isinstance(backoff, Sequence):
            raise ValueError(f"job {job_name!r}: backoff is steps like (60, 120) or a callable")
        options["backoff"] = _steps(job_name, backoff)


def _check_unique(job_name: str, options: dict[str, Any], transactional: bool) -> None:
    if (options["unique_key"] is None) != (options["unique_for_s"] is None):
        raise ValueError(f"job {job_name!r}: give unique_key and unique_for_s together")
    if options["unique_key"] is not None and not callable(options["unique_key"]):
        raise ValueError(f"job {job_name!r}: unique_key is a function of the event")
    positive(job_name, "unique_for_s", options["unique_for_s"], optional=True)


def _check_apply_batch(job_name: str, options: dict[str, Any], transactional: bool) -> None:
    apply = options["apply_batch"]
    if apply is None:
        return
    if not callable(apply):
        raise ValueError(f"job {job_name!r}: apply_batch is a function (conn, items)")
    if not transactional:
        raise ValueError(
            f"job {job_name!r}: apply_batch needs the batch's transaction "
            "(transactional=False jobs have none)"
        )


def _check_lookahead(job_name: str, options: dict[str, Any], transactional: bool) -> None:
    value = options["lookahead"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"job {job_name!r}: lookahead must be an integer, not {value!r}")
    if not 0 <= value <= MAX_LOOKAHEAD:
        raise ValueError(f"job {job_name!r}: lookahead must be 0 to {MAX_LOOKAHEAD}")
    if value and transactional:
        raise ValueError(
            f"job {job_name!r}: lookahead is for transactional=False jobs (a job in its "
            "batch's transaction shares it with the others already)"
        )


# In the order of the worker's middleware stack (consumers.middleware.DEFAULT_STACK).
OPTION_SETS: tuple[OptionSet, ...] = (
    OptionSet("Priority", {"priority": "default"}, _check_priority),
    OptionSet("RateLimit", {"rate_limit": None}, _check_rate_limit),
    OptionSet("TimeLimit", {"timeout_s": 60.0}, _check_timeout),
    OptionSet("Retries", {"tries": 3, "backoff": None}, _check_retries),
    OptionSet("UniqueLocks", {"unique_key": None, "unique_for_s": None}, _check_unique),
    OptionSet("BatchEffects", {"apply_batch": None}, _check_apply_batch),
    OptionSet("Lookahead", {"lookahead": 0}, _check_lookahead),
)


def known_options() -> dict[str, Any]:
    """Every declared option with its default."""
    return {name: d for s in OPTION_SETS for name, d in s.defaults.items()}


def prepare_options(job_name: str, given: dict[str, Any], transactional: bool) -> dict[str, Any]:
    """The job's options with defaults filled in, each checked."""
    known = known_options()
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(
            f"job {job_name!r}: unknown option(s) {', '.join(unknown)}; "
            f"options are: {', '.join(sorted(known))}"
        )
    options = {**known, **given}
    for option_set in OPTION_SETS:
        option_set.check(job_name, options, transactional)
    return options


def longest_backoff(job: HasOptions) -> float:
    """The longest wait between two of the job's attempts: a retry's `x-not-before` can
    never honestly be further away than this."""
    backoff = job.option("backoff")
    return float(max((backoff(n) for n in range(1, job.option("tries") + 1)), default=0.0))


def lock_for(job: HasOptions, message: Any, now: datetime) -> tuple[str, datetime] | None:
    """(lock key, expiry) for dispatching `message` to a unique job; None if not unique."""
    key_of = job.option("unique_key")
    if key_of is None:
        return None
    return key_of(message), now + timedelta(seconds=job.option("unique_for_s"))
