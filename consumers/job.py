"""Declaring a job: one module, a stable name, one typed function.

    @job("generate-product-blurhash", on=ProductImageUploaded, tries=3, timeout_s=60)
    def generate_product_blurhash(event: ProductImageUploaded, ctx: JobContext) -> None: ...

The name is stored (inbox rows, failed jobs, locks): renaming a job re-runs its effects for
every message still in its topics. The runtime owns transactions, retries, logging and Kafka;
a handler only reads its event and writes through `ctx`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from domain.events import DomainEvent

__all__ = [
    "Backoff",
    "Job",
    "JobRegistry",
    "Priority",
    "exponential",
    "job",
    "jobs",
]

Priority = Literal["high", "default"]
Backoff = Callable[[int], float]
"""Seconds to wait after failed attempt N (1-based) before attempt N+1."""

E = TypeVar("E", bound=DomainEvent)
Handler = Callable[[Any, Any], None]


def exponential(base_s: float = 10.0, factor: float = 2.0, max_s: float = 3600.0) -> Backoff:
    """base, base*factor, base*factor^2 ... capped at max_s."""
    return lambda attempt: min(max_s, base_s * factor ** (attempt - 1))


def _steps(delays: Sequence[float]) -> Backoff:
    """Fixed steps, the last repeated: (60, 120) waits 60 s, then 120 s, 120 s..."""
    if not delays:
        raise ValueError("a backoff needs at least one delay")
    return lambda attempt: float(delays[min(attempt, len(delays)) - 1])


@dataclass(frozen=True)
class Job:
    name: str
    handler: Handler
    on: tuple[type[DomainEvent], ...]
    tries: int = 3
    backoff: Backoff = field(default_factory=exponential)
    timeout_s: float | None = 60.0
    priority: Priority = "default"
    # Unique jobs: while a dispatch's lock holds (unique_for_s), a second dispatch with the
    # same key is a no-op. The key comes from the event (e.g. tenant and date).
    unique_key: Callable[[Any], str] | None = None
    unique_for_s: float | None = None
    # Messages per second per worker process; None means no limit.
    rate_limit: float | None = None
    # False: the job opens its own short transactions (ctx.transaction(), ctx.run commits)
    # and runs after its batch has committed, outside it. For work that must commit before
    # an outside effect (an e-mail) or in many small transactions (prune). It must be
    # idempotent by itself: a crash before its inbox row commits runs it again.
    transactional: bool = True

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(cls.TYPE for cls in self.on)


class JobRegistry:
    """Jobs by name and by the event types they handle."""

    def __init__(self) -> None:
        self._by_name: dict[str, Job] = {}

    def add(self, declared: Job) -> Job:
        existing = self._by_name.get(declared.name)
        if existing is not None and existing.handler is not declared.handler:
            raise ValueError(f"job {declared.name!r} is already declared")
        if not 0 < len(declared.name) <= 100:
            raise ValueError(f"job name {declared.name!r}: 1 to 100 characters (inbox key)")
        if declared.tries < 1:
            raise ValueError(f"job {declared.name!r}: tries must be >= 1")
        if (declared.unique_key is None) != (declared.unique_for_s is None):
            raise ValueError(f"job {declared.name!r}: give unique_key and unique_for_s together")
        self._by_name[declared.name] = declared
        return declared

    def get(self, name: str) -> Job:
        try:
            return self._by_name[name]
        except KeyError:
            raise LookupError(
                f"no job named {name!r}; known jobs: {', '.join(sorted(self._by_name))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)


jobs = JobRegistry()


def job(
    name: str,
    *,
    on: type[E] | tuple[type[E], ...],
    tries: int = 3,
    backoff: Sequence[float] | Backoff | None = None,
    timeout_s: float | None = 60.0,
    priority: Priority = "default",
    unique_key: Callable[[E], str] | None = None,
    unique_for_s: float | None = None,
    rate_limit: float | None = None,
    transactional: bool = True,
    registry: JobRegistry = jobs,
) -> Callable[[Callable[[E, Any], None]], Callable[[E, Any], None]]:
    """Declare a job in the default registry; the function stays callable as it was.

    `transactional=False`: the job does not run in its poll batch's transaction. It runs
    after the batch has committed (so after the batch's transactional jobs) and before the
    batch's offsets are committed, with no transaction open: `ctx.transaction()` opens a
    short committed one, `ctx.run` and `ctx.dispatch` commit by themselves, and
    `ctx.connection` raises. Its inbox row is written after it returns, in a transaction of
    its own; a crash between its work and that record runs it again, so the job must be
    idempotent by itself (take a row first, then act, then record the outcome).
    """
    if backoff is None:
        delay = exponential()
    elif callable(backoff):
        delay = backoff
    else:
        delay = _steps(tuple(backoff))

    def decorate(fn: Callable[[E, Any], None]) -> Callable[[E, Any], None]:
        registry.add(
            Job(
                name=name,
                handler=fn,
                on=on if isinstance(on, tuple) else (on,),
                tries=tries,
                backoff=delay,
                timeout_s=timeout_s,
                priority=priority,
                unique_key=unique_key,
                unique_for_s=unique_for_s,
                rate_limit=rate_limit,
                transactional=transactional,
            )
        )
        return fn

    return decorate
