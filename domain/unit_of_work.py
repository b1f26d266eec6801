"""One unit of work = one database transaction: events + projections + outbox rows.

The unit of work never commits; the command bus owns the transaction. On flush it writes
the new events, the projection changes and one outbox row per event, in that order, so
either all of it commits or none of it does.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, exists, select

from domain.aggregate import Aggregate
from domain.errors import AlreadyExists, EventTooLarge, NotFound
from domain.event_store import event_row, load_stream
from domain.events import EventRegistry, RecordedEvent
from domain.projections import project
from domain.routing import topic_for
from domain.schema import domain_events
from domain.write_plan import Insert, WritePlan
from outbox.envelope import DEFAULT_MAX_MESSAGE_BYTES, Envelope, canonical_json, record_size
from outbox.notify import WAKEUP_CHANNEL
from outbox.schema import outbox_table
from outbox.writer import outbox_rows

__all__ = ["AlreadyExists", "CommandContext", "UnitOfWork"]

A = TypeVar("A", bound=Aggregate)


def _traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who and why: travels in event metadata and outbox headers, never in payloads."""

    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    causation_id: str | None = None
    tenant_id: str | None = None
    traceparent: str = field(default_factory=_traceparent)
    actor: str | None = None

    def metadata(self) -> dict[str, str]:
        meta = {"correlation_id": self.correlation_id, "traceparent": self.traceparent}
        if self.causation_id:
            meta["causation_id"] = self.causation_id
        if self.tenant_id:
            meta["tenant_id"] = self.tenant_id
        if self.actor:
            meta["actor"] = self.actor
        return meta


class UnitOfWork:
    def __init__(
        self,
        conn: Connection,
        registry: EventRegistry,
        *,
        now: datetime,
        context: CommandContext,
        shards: int,
        attempt: int = 1,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        first: Sequence[Insert] = (),
    ) -> None:
        self._conn = conn
        # Rows the caller adds to the same write, before the events (the webhook row).
        self._first = list(first)
        self._registry = registry
        self._now = now
        self._context = context
        self._shards = shards
        self._attempt = attempt
        self._new_id = id_factory
        self._max_message_bytes = max_message_bytes
        self._touched: dict[str, Aggregate] = {}
        # The events the last flush sent (set before it runs: what a write lost in flight
        # may or may not have stored).
        self.sent: list[RecordedEvent] = []

    @property
    def now(self) -> datetime:
        return self._now

    @property
    def connection(self) -> Connection:
        return self._conn

    def get(self, cls: type[A], aggregate_id: str) -> A:
        """Load an aggregate by folding its stored events (once per unit of work)."""
        known = self._touched.get(aggregate_id)
        if known is not None:
            if not isinstance(known, cls):
                raise NotFound(f"{cls.TYPE} {aggregate_id} does not exist")
            return known
        stream = load_stream(self._conn, aggregate_id, self._registry)
        if not stream or stream[0].aggregate_type != cls.TYPE:
            raise NotFound(f"{cls.TYPE} {aggregate_id} does not exist")
        aggregate = cls(aggregate_id)
        for rec in stream:
            aggregate.replay(rec.event, rec.version)
        self._touched[aggregate_id] = aggregate
        return aggregate

    def add(self, aggregate: Aggregate) -> None:
        """Track a newly created aggregate.

        The first attempt is optimistic (the UNIQUE(aggregate_id, version) index catches a
        taken id); a retry checks first, so a taken id becomes a clear AlreadyExists.
        """
        if aggregate.id in self._touched and self._touched[aggregate.id] is not aggregate:
            raise AlreadyExists(f"{aggregate.TYPE} {aggregate.id} already exists")
        if (
            self._attempt > 1
            and self._conn.execute(
                select(exists().where(domain_events.c.aggregate_id == aggregate.id))
            ).scalar()
        ):
            raise AlreadyExists(f"{aggregate.TYPE} {aggregate.id} already exists")
        self._touched[aggregate.id] = aggregate

    def flush(self) -> list[RecordedEvent]:
        """Write everything recorded so far into the open transaction; return what was written."""
        records: list[RecordedEvent] = []
        plan = WritePlan()
        plan.extend(list(self._first))
        self._first = []  # written by this flush only, never twice
        context_metadata = self._context.metadata()
        for aggregate in self._touched.values():
            pending = aggregate.take_pending()
            if not pending:
                continue
            metadata = context_metadata
            if aggregate.tenant_id and "tenant_id" not in metadata:
                metadata = {**context_metadata, "tenant_id": aggregate.tenant_id}
            metadata_json = canonical_json(metadata)
            for version, evt in pending:
                rec = RecordedEvent(
                    event_id=self._new_id(),
                    aggregate_type=aggregate.TYPE,
                    aggregate_id=aggregate.id,
                    version=version,
                    event=evt,
                    occurred_at=self._now,
                    metadata=metadata,
                    payload_json=canonical_json(evt.model_dump(mode="json")),
                )
                records.append(rec)
                plan.insert(domain_events, event_row(rec, metadata_json))
        if not records:
            plan.execute(self._conn)  # the caller's rows, if any
            return records
        for rec in records:
            plan.extend(project(rec))
        envelopes = [self._envelope(rec) for rec in records]
        for env in envelopes:
            size = record_size(env)
            if size > self._max_message_bytes:
                raise EventTooLarge(
                    f"{env.type} of {env.key} would be a {size}-byte Kafka record; the largest "
                    f"the broker takes is {self._max_message_bytes} bytes "
                    "(KAFKA_MAX_MESSAGE_BYTES). Nothing was written: send less in one command"
                )
        for row in outbox_rows(envelopes, shards=self._shards, now=self._now):
            plan.insert(outbox_table, row)
        plan.notify(WAKEUP_CHANNEL)
        # Events, state and outbox rows: one statement on PostgreSQL, a few elsewhere.
        self.sent = records
        plan.execute(self._conn)
        return records

    def _envelope(self, rec: RecordedEvent) -> Envelope:
        headers = dict(rec.metadata)
        headers["aggregate_type"] = rec.aggregate_type
        headers["aggregate_version"] = str(rec.version)
        headers["schema_version"] = str(rec.event.SCHEMA_VERSION)
        return Envelope(
            event_id=rec.event_id,
            topic=topic_for(rec.aggregate_type),
            key=rec.aggregate_id,
            type=rec.event.TYPE,
            payload=rec.payload_json,
            occurred_at=rec.occurred_at,
            headers=headers,
        )
