"""Dispatching jobs through the outbox, in the caller's transaction.

A dispatched job is a message on its group's `<group>.jobs` topic naming the job in an
`x-job` header; the relay publishes it after the caller commits, like any event. A unique
job's lock is taken in the same transaction, so "dispatched" and "locked" commit together.

A delayed job (`delay=timedelta(minutes=10)`) is the same outbox row with `available_at`
that much later: the relay leaves it pending until then, and holds back the later rows of
its key behind it (a job's key is its own message id unless the caller names one, so a
delay holds back nothing else). A unique job's lock then lasts from the time the job is
due, not from its dispatch: a delay longer than `unique_for_s` must not let a second
dispatch in before the first one ran.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection

from consumers import store
from consumers.errors import InvalidDelay
from consumers.groups import Group, job_groups
from consumers.headers import Headers
from consumers.job import Job, JobRegistry
from consumers.messages import BatchFinished
from consumers.options import lock_for
from domain.events import DomainEvent
from outbox.envelope import Envelope, canonical_json
from outbox.types import utcnow
from outbox.writer import append

__all__ = ["MAX_DELAY", "BatchFinished", "Dispatcher", "Headers", "InvalidDelay", "check_delay"]

# The longest delay a dispatch takes: a delayed row is a pending outbox row, which prune
# and the coroner's "oldest pending" see; a longer wait belongs in the scheduler.
MAX_DELAY = timedelta(days=30)


def check_delay(delay: object) -> timedelta:
    """The delay itself, or InvalidDelay saying what is wrong with it (zero when None)."""
    if delay is None:
        return timedelta(0)
    if not isinstance(delay, timedelta):
        raise InvalidDelay(
            f"delay must be a datetime.timedelta, not {type(delay).__name__}: "
            "e.g. delay=timedelta(minutes=10)"
        )
    if delay < timedelta(0):
        raise InvalidDelay(f"delay {delay} is negative: a job cannot run before it is dispatched")
    if delay > MAX_DELAY:
        raise InvalidDelay(
            f"delay {delay} is longer than {MAX_DELAY.days} days: schedule the work instead "
            "(`outbox schedule`), a delayed job waits as a pending outbox row"
        )
    return delay


class Dispatcher:
    def __init__(
        self,
        groups: Sequence[Group],
        registry: JobRegistry,
        *,
        shards: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._group_of = job_groups(groups, registry)
        self._registry = registry
        self._shards = shards
        self._clock = clock

    def group_of(self, job_name: str) -> Group:
        try:
            return self._group_of[job_name]
        except KeyError:
            raise LookupError(f"job {job_name!r} belongs to no consumer group") from None

    def dispatch(
        self,
        conn: Connection,
        job_name: str,
        message: DomainEvent,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: timedelta | None = None,
    ) -> str | None:
        """Queue one job, due now or after `delay`; returns its message id, or None when a
        unique job's lock holds."""
        wait = check_delay(delay)
        declared = self._registry.get(job_name)
        now = self._clock()
        due = now + wait if wait else None
        message_id = str(uuid.uuid4())
        extra = dict(headers or {})
        lock = lock_for(declared, message, due or now)
        if lock is not None:
            lock_key, until = lock
            if not store.take_lock(
                conn, job_name, lock_key, message_id=message_id, expires_at=until, now=now
            ):
                return None
            extra[Headers.LOCK] = lock_key
        envelope = self._envelope(
            declared, message, message_id, key=key, headers=extra, now=now, due=due
        )
        append(conn, [envelope], shards=self._shards, now=now if due else None)
        return message_id

    def dispatch_batch(
        self,
        conn: Connection,
        name: str,
        job_name: str,
        messages: Sequence[DomainEvent],
        *,
        then: str | None = None,
        catch: str | None = None,
        finally_: str | None = None,
        keys: Sequence[str] | None = None,
        delay: timedelta | None = None,
    ) -> str:
        """Fan out one job per message, tracked as a batch, all due now or after `delay`;
        returns the batch id."""
        check_delay(delay)
        batch_id = self.open_batch(
            conn, name, job_name, len(messages), then=then, catch=catch, finally_=finally_
        )
        self.add_to_batch(conn, batch_id, job_name, messages, keys=keys, delay=delay)
        return batch_id

    def open_batch(
        self,
        conn: Connection,
        name: str,
        job_name: str,
        total: int,
        *,
        then: str | None = None,
        catch: str | None = None,
        finally_: str | None = None,
    ) -> str:
        """A batch of `total` members to come, for a fan-out too large for one transaction:
        its members follow in `add_to_batch` calls of later transactions. It cannot finish
        before `total` members settled, so the follow-ups wait for the last chunk."""
        group = self.group_of(job_name)
        for follow_up in (then, catch, finally_):
            if follow_up is not None:
                self.group_of(follow_up)  # an unknown follow-up fails now, not at the end
        batch_id = str(uuid.uuid4())
        store.create_batch(
            conn,
            batch_id=batch_id,
            name=name,
            group=group.name,
            total=total,
            now=self._clock(),
            then_job=then,
            catch_job=catch,
            finally_job=finally_,
        )
        return batch_id

    def add_to_batch(
        self,
        conn: Connection,
        batch_id: str,
        job_name: str,
        messages: Sequence[DomainEvent],
        *,
        keys: Sequence[str] | None = None,
        delay: timedelta | None = None,
    ) -> None:
        """Queue members of a batch made by `open_batch` (the caller counts them), due now
        or after `delay`."""
        wait = check_delay(delay)
        declared = self._registry.get(job_name)
        now = self._clock()
        envelopes = [
            self._envelope(
                declared,
                message,
                str(uuid.uuid4()),
                key=keys[n] if keys else None,
                headers={Headers.BATCH: batch_id},
                now=now,
                due=now + wait if wait else None,
            )
            for n, message in enumerate(messages)
        ]
        append(conn, envelopes, shards=self._shards, now=now if wait else None)

    def _envelope(
        self,
        declared: Job,
        message: DomainEvent,
        message_id: str,
        *,
        key: str | None,
        headers: dict[str, str],
        now: datetime,
        due: datetime | None,
    ) -> Envelope:
        return Envelope(
            event_id=message_id,
            topic=self.group_of(declared.name).jobs_topic,
            key=key or message_id,
            type=message.TYPE,
            payload=canonical_json(message.model_dump(mode="json")),
            occurred_at=now,
            headers={
                Headers.JOB: declared.name,
                Headers.SCHEMA_VERSION: str(message.SCHEMA_VERSION),
                **headers,
            },
            available_at=due,
        )
