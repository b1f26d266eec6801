"""The write-path benchmark's three variants of one business command, "record an
interaction" (bench/write_path.py measures them; bench/webhooks.py reuses `full_command`):

* ``baseline``: the state row alone, the idiomatic SQLAlchemy Core way;
* ``full``: the real command bus (state, event and outbox rows in one transaction);
* ``naive``: the same three rows written by hand with three Core inserts.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, insert

import domain
import domain.schema
from domain.analytics import RecordInteraction
from domain.errors import AlreadyExists
from domain.tenancy import OnboardTenant
from outbox.envelope import canonical_json, shard_for
from outbox.schema import OutboxStatus, outbox_table

__all__ = ["FACTORIES", "SHARDS", "TENANT", "Command", "full_command"]

SHARDS = 16
TENANT = "t-1"

# One command; `worker` and `seq` make the visitor id unique per thread and call.
Command = Callable[[int, int], None]


def baseline_command(engine: Engine) -> Command:
    """State row only, the idiomatic SQLAlchemy Core way."""
    interactions = domain.schema.interactions

    def run(worker: int, seq: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                insert(interactions).values(
                    id=str(uuid.uuid4()),
                    tenant_id=TENANT,
                    visitor_id=f"v-{worker}-{seq}",
                    kind="page_view",
                    product_id=None,
                    occurred_at=datetime.now(UTC),
                )
            )

    return run


def full_command(engine: Engine) -> Command:
    """The real command bus: state row + event row + outbox row in one transaction."""
    bus = domain.CommandBus(engine, shards=SHARDS)
    with contextlib.suppress(AlreadyExists):  # an unknown tenant is refused: onboard it once
        bus.dispatch(
            OnboardTenant(tenant_id=TENANT, name="Bench", contact_email="bench@example.com")
        )

    def run(worker: int, seq: int) -> None:
        bus.dispatch(
            RecordInteraction(
                tenant_id=TENANT,
                visitor_id=f"v-{worker}-{seq}",
                kind="page_view",
                product_id=None,
            )
        )

    return run


def naive_command(engine: Engine) -> Command:
    """The same three rows as the bus, written by hand with three Core inserts."""
    interactions = domain.schema.interactions
    domain_events = domain.schema.domain_events

    def run(worker: int, seq: int) -> None:
        now = datetime.now(UTC)
        interaction_id = str(uuid.uuid4())
        event_id = str(uuid.uuid4())
        visitor_id = f"v-{worker}-{seq}"
        payload = canonical_json(
            {"tenant_id": TENANT, "visitor_id": visitor_id, "kind": "page_view", "product_id": None}
        )
        metadata = {
            "correlation_id": str(uuid.uuid4()),
            "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
            "tenant_id": TENANT,
        }
        headers = {
            **metadata,
            "aggregate_type": "interaction",
            "aggregate_version": "1",
            "schema_version": "1",
        }
        with engine.begin() as conn:
            conn.execute(
                insert(interactions).values(
                    id=interaction_id,
                    tenant_id=TENANT,
                    visitor_id=visitor_id,
                    kind="page_view",
                    product_id=None,
                    occurred_at=now,
                )
            )
            conn.execute(
                insert(domain_events).values(
                    aggregate_type="interaction",
                    aggregate_id=interaction_id,
                    version=1,
                    event_id=event_id,
                    type="interaction.recorded",
                    schema_version=1,
                    payload=payload,
                    metadata=canonical_json(metadata),
                    occurred_at=now,
                )
            )
            conn.execute(
                insert(outbox_table).values(
                    event_id=event_id,
                    topic="interaction-events",
                    key=interaction_id,
                    shard=shard_for(interaction_id, SHARDS),
                    type="interaction.recorded",
                    payload=payload,
                    headers=canonical_json(headers),
                    created_at=now,
                    available_at=now,
                    attempts=0,
                    status=OutboxStatus.PENDING,
                )
            )

    return run


FACTORIES: dict[str, Callable[[Engine], Command]] = {
    "baseline": baseline_command,
    "full": full_command,
    "naive": naive_command,
}
