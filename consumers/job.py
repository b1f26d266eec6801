"""Declaring a job: one module, a stable name, one typed function.

    @job("generate-product-blurhash", on=ProductImageUploaded, group="media", tries=3,
         timeout_s=60)
    def generate_product_blurhash(event: ProductImageUploaded, ctx: JobContext) -> None: ...

The name is stored (inbox rows, failed jobs, locks): renaming a job re-runs its effects for
every message still in its topics. The runtime owns transactions, retries, logging and Kafka;
a handler only reads its event and writes through `ctx`.

Per-job options (`tries`, `backoff`, `timeout_s`, `priority`, `unique_key`,
`unique_for_s`, `rate_limit`, `apply_batch`) belong to the middleware that reads them
(consumers.middleware); their names, defaults and checks are declared in consumers.options,
and a job naming an option declared nowhere is refused when it is declared, as dramatiq does
with `actor_options`. Only what shapes the attempt itself is a field of the job: the
group it belongs to and whether it runs in its batch's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from consumers.options import Backoff, exponential, prepare_options
from domain.events import DomainEvent

__all__ = ["Backoff", "Job", "JobRegistry", "Priority", "exponential", "job", "jobs"]

Priority = Literal["high", "default"]

E = TypeVar("E", bound=DomainEvent)
Handler = Callable[[Any, Any], None]


@dataclass(frozen=True)
class Job:
    name: str
    handler: Handler
    on: tuple[type[DomainEvent], ...]
    # The consumer group that runs it (None: the group lists it by name instead).
    group: str | None = None
    # False: the job opens its own short transactions (ctx.transaction(), ctx.run commits)
    # and runs after its batch has committed, outside it. For work that must commit before
    # an outside effect (an e-mail) or in many small transactions (prune). It must be
    # idempotent by itself: a crash before its inbox row commits runs it again.
    transactional: bool = True
    # Every declared option of every middleware, defaults filled in (see JobRegistry.add).
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(cls.TYPE for cls in self.on)

    def option(self, name: str) -> Any:
        return self.options[name]


class JobRegistry:
    """Jobs by name. Adding one checks its options against their declarations."""

    def __init__(self) -> None:
        self._by_name: dict[str, Job] = {}

    def add(self, declared: Job) -> Job:
        existing = self._by_name.get(declared.name)
        if existing is not None and existing.handler is not declared.handler:
            raise ValueError(f"job {declared.name!r} is already declared")
        if not 0 < len(declared.name) <= 100:
            raise ValueError(f"job name {declared.name!r}: 1 to 100 characters (inbox key)")
        options = prepare_options(declared.name, dict(declared.options), declared.transactional)
        complete = Job(
            declared.name,
            declared.handler,
            declared.on,
            declared.group,
            declared.transactional,
            options,
        )
        self._by_name[declared.name] = complete
        return complete

    def get(self, name: str) -> Job:
        try:
            return self._by_name[name]
        except KeyError:
            raise LookupError(
                f"no job named {name!r}; known jobs: {', '.join(sorted(self._by_name))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def declared_for(self, group: str) -> list[str]:
        """Jobs that name this group in their declaration."""
        return sorted(n for n, j in self._by_name.items() if j.group == group)


jobs = JobRegistry()


def job(
    name: str,
    *,
    on: type[E] | tuple[type[E], ...],
    group: str | None = None,
    transactional: bool = True,
    registry: JobRegistry = jobs,
    **options: Any,
) -> Callable[[Callable[[E, Any], None]], Callable[[E, Any], None]]:
    """Declare a job in the default registry; the function stays callable as it was.

    `group`: the consumer group that runs it (a job belongs to one group).
    `transactional=False`: the job does not run in its poll batch's transaction. It runs
    after the batch has committed (so after the batch's transactional jobs) and before the
    batch's offsets are committed, with no transaction open: `ctx.transaction()` opens a
    short committed one, `ctx.run` and `ctx.dispatch` commit by themselves, and
    `ctx.connection` raises. Its inbox row is written after it returns, in a transaction of
    its own; a crash between its work and that record runs it again, so the job must be
    idempotent by itself (take a row first, then act, then record the outcome).
    Other keywords are middleware options (see consumers.middleware); unknown ones are refused.
    """

    def decorate(fn: Callable[[E, Any], None]) -> Callable[[E, Any], None]:
        registry.add(
            Job(
                name=name,
                handler=fn,
                on=on if isinstance(on, tuple) else (on,),
                group=group,
                transactional=transactional,
                options=options,
            )
        )
        return fn

    return decorate
