"""The relay's pipeline: one batch in flight to the broker while the database thread writes
the previous batch's outcome and claims the next (ADR 003).

    loop thread:      send N ------- flush N --- decide N | send N+1 ----- flush N+1 ...
    database thread:  write N-1, claim N+1 (not N) ------ | write N, claim N+2 (not N+1)

What keeps the guarantees:

- One batch at a time at the broker: N+1 is sent only once N's every outcome is known, so
  the client never holds two batches of one key (nothing to reorder on a retry).
- A key that failed in N is held back before N+1 is sent: N+1 was claimed before N's
  outcome was known, so its rows of that key are taken out (`Decided.holds`) and stay
  pending; the next claim, after N's deferral is written, skips the key like today.
- The claim of N+1 leaves exactly N's rows out (it reads them and drops them: skipping
  the range of ids N spans would hide a row committed late inside it while its key's
  later rows came after it), and each shard's cursor stays at or below N's first row
  until N's outcome is written.
- A batch that got no outcome (broker down, stopping, a deadline, a stalled producer)
  discards the batch claimed behind it: nothing of it was sent, its rows stay pending.
- Marks are fenced on the epoch as before; a row whose lease changed since its claim is
  not sent at all (`current`).
- The two threads never touch the claimer at the same time: the loop thread hands the
  database thread one step at a time and waits for it before the next (`DatabaseThread`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Engine

from relay import store
from relay.accounting import Batch
from relay.messages import UnsendableRow, to_message
from relay.publisher import Delivered, Message, Outcome

__all__ = [
    "DatabaseThread",
    "Decided",
    "Step",
    "as_batch",
    "current",
    "decide",
    "schedule",
    "to_messages",
    "write",
]

T = TypeVar("T")


@dataclass(slots=True)
class Decided:
    """One batch's outcome, decided on the loop thread, written on the database thread."""

    rows: list[store.Claimed]
    acks: list[store.Ack] = field(default_factory=list)
    dead: list[store.Failure] = field(default_factory=list)
    retry: list[store.Failure] = field(default_factory=list)
    retry_keys: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    attempts: int = 0  # the most a failed row has had, for its back-off
    broker_down: bool = False  # the broker answered nothing (or nothing was decided)
    unanswered: bool = False  # no outcome at all: nothing to write
    until: datetime | None = None
    now: datetime | None = None
    started: float = 0.0  # perf_counter when the batch's send began

    def holds(self, rows: list[store.Claimed]) -> list[store.Claimed]:
        """`rows` without those of the keys that failed here (they wait for their head)."""
        if not self.retry_keys:
            return rows
        return [row for row in rows if row.key not in self.retry_keys]


@dataclass(frozen=True, slots=True)
class Step:
    """What one turn of the database thread did: the marks it wrote, what it claimed."""

    marked: store.Marked | None
    rows: list[store.Claimed]
    held: dict[int, int]


def decide(
    rows: list[store.Claimed],
    held: dict[int, int],
    outcomes: Sequence[Outcome],
    dead: list[store.Failure],
    now: datetime,
) -> Decided:
    """Sort the broker's outcomes of `rows` (the rows sent, in send order) into acks, dead
    and retriable failures; `dead` already holds the rows that could not be sent."""
    decided = Decided(rows=rows, dead=dead, now=now)
    acks, retry, keys = decided.acks, decided.retry, decided.retry_keys
    latencies = decided.latencies
    attempts = 0
    for row, outcome in zip(rows, outcomes, strict=True):
        epoch = held[row.shard]
        if isinstance(outcome, Delivered):
            acks.append(store.Ack(row.id, row.shard, epoch, outcome.partition, outcome.offset))
            latencies.append((now - row.created_at).total_seconds())
        elif outcome.permanent:
            dead.append(store.Failure(row.id, epoch, outcome.reason))
        else:
            retry.append(store.Failure(row.id, epoch, outcome.reason))
            keys.add(row.key)
            attempts = max(attempts, row.attempts + 1)
    decided.attempts = attempts
    return decided


def schedule(decided: Decided, backoff: Callable[[int], float], *, one_pass: bool) -> None:
    """When the failed rows go again: at once after a broker that answered nothing (the
    whole relay backs off instead), else after the rows' own back-off."""
    now = decided.now
    assert now is not None  # noqa: S101 - set by decide()
    decided.broker_down = bool(decided.retry) and not decided.acks and not one_pass
    delay = 0.0 if decided.broker_down else backoff(decided.attempts)
    decided.until = now + timedelta(seconds=delay)


def current(
    rows: list[store.Claimed], claimed_under: dict[int, int], held: dict[int, int]
) -> list[store.Claimed]:
    """The rows whose shard is still held under the epoch they were claimed with: a lease
    lost since the claim (it ran while the batch before was in flight) sends nothing of
    that shard; its rows stay pending for the new holder."""
    if all(held.get(s) == e for s, e in claimed_under.items()):
        return rows
    return [row for row in rows if held.get(row.shard) == claimed_under[row.shard]]


def write(engine: Engine, owner: str, decided: Decided) -> store.Marked:
    """A batch's outcome in one transaction, one fenced statement (relay.marks)."""
    if decided.until is None or decided.now is None:  # pragma: no cover - decide() sets them
        raise ValueError("an undecided batch")
    with engine.begin() as conn:
        return store.mark_batch(
            conn,
            owner,
            decided.acks,
            decided.dead,
            decided.retry,
            until=decided.until,
            now=decided.now,
        )


def to_messages(
    rows: list[store.Claimed], claimed_under: dict[int, int], source: bytes
) -> tuple[list[Message], list[store.Claimed], list[store.Failure]]:
    """The messages of `rows`, the rows they are of, and the rows that can never be sent
    (dead at once, with the reason)."""
    messages: list[Message] = []
    sent_rows: list[store.Claimed] = []
    dead: list[store.Failure] = []
    for row in rows:
        try:
            messages.append(to_message(row, source))
            sent_rows.append(row)
        except UnsendableRow as exc:
            dead.append(store.Failure(row.id, claimed_under[row.shard], str(exc)))
    return messages, sent_rows, dead


def as_batch(decided: Decided, marked: store.Marked) -> Batch:
    """What relay.accounting counts and logs of a written batch."""
    return Batch(
        decided.rows,
        decided.acks,
        marked.published,
        marked.dead,
        marked.deferred,
        decided.dead,
        decided.retry,
        decided.latencies,
        decided.started,
        decided.now,
    )


class DatabaseThread:
    """One worker thread for the database side of the pipeline: one step at a time."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-db")

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        return self._pool.submit(fn)

    def result(self, job: Future[T]) -> T:
        """The step's result, or its exception. Every statement a step runs is bounded by
        the driver's and the server's timeouts, so the step ends."""
        return job.result()

    def run(self, fn: Callable[[], T]) -> T:
        return self.result(self.submit(fn))

    def settle(self, job: Future[T]) -> None:
        """Wait for a step whose result no longer matters (the loop is leaving)."""
        wait([job])

    def close(self) -> None:
        self._pool.shutdown(wait=True)
