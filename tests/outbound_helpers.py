"""Helpers of the delivery tests: endpoint rows inserted directly (the endpoints' own store is
another stream's), deliveries made, claimed and recorded at explicit times."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import OperationalError

from outbound.claims import Claimed, claim_due
from outbound.config import WebhookConfig
from outbound.deliveries import create, subscribed
from outbound.health import record
from outbound.ports import Outcome, SendResult
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e

__all__ = [
    "CONFIG",
    "T0",
    "FailingEngine",
    "add_endpoint",
    "at",
    "claim",
    "deliveries",
    "endpoint",
    "make",
    "outcome",
    "settle",
]

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CONFIG = WebhookConfig(
    schedule_s=(0, 10, 100),
    jitter=0.0,
    breaker_failures=3,
    breaker_cooldown_s=60,
    lease_s=30,
    allow_http=True,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def add_endpoint(
    engine: Engine,
    endpoint_id: str,
    *,
    tenant_id: str = "t-1",
    url: str = "http://127.0.0.1:9/hook",
    event_types: Sequence[str] = ("*",),
    ordered: bool = False,
    rate_limit_per_s: float | None = None,
    state: str = "enabled",
) -> str:
    with engine.begin() as conn:
        conn.execute(
            insert(e).values(
                id=endpoint_id,
                tenant_id=tenant_id,
                url=url,
                event_types=json.dumps(list(event_types)),
                ordered=ordered,
                rate_limit_per_s=rate_limit_per_s,
                signing="v1",
                secret="not-a-secret",  # noqa: S106 - the dispatcher never reads it here
                state=state,
                consecutive_failures=0,
                created_at=T0,
                updated_at=T0,
                version=1,
            )
        )
    return endpoint_id


def make(
    engine: Engine, event_id: str, *, tenant_id: str = "t-1", now: datetime = T0, **kw: Any
) -> int:
    """Deliveries of one event to the tenant's subscribed endpoints; how many were added."""
    event_type = kw.pop("event_type", "order.paid")
    with engine.begin() as conn:
        endpoints = subscribed(conn, tenant_id, event_type, CONFIG)
        return create(
            conn,
            event_id=event_id,
            event_type=event_type,
            tenant_id=tenant_id,
            occurred_at=now,
            payload=kw.pop("payload", {"order_id": event_id}),
            endpoints=endpoints,
            now=now,
        )


def claim(
    engine: Engine,
    now: datetime,
    *,
    limit: int = 10,
    owner: str = "a",
    config: WebhookConfig = CONFIG,
) -> list[Claimed]:
    with engine.begin() as conn:
        return claim_due(conn, owner, now, limit, config)


def outcome(kind: Outcome, code: int | None = None, **kw: Any) -> SendResult:
    return SendResult(kind, code, 5, **kw)


def settle(
    engine: Engine,
    claimed: Claimed,
    result: SendResult,
    now: datetime,
    *,
    config: WebhookConfig = CONFIG,
    rng: random.Random | None = None,
) -> bool:
    with engine.begin() as conn:
        return record(conn, claimed, result, config, now, rng or random.Random(1), shards=4)


def deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(d).order_by(d.c.id)).all())


def endpoint(engine: Engine, endpoint_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(e).where(e.c.id == endpoint_id)).one()


class FailingEngine:
    """The real engine, whose transactions (`begin`, and `connect` for a record of one
    statement in autocommit) fail as a lost connection does whenever `should_fail` says."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> Any:
        return self.engine.dialect

    def should_fail(self) -> bool:
        raise NotImplementedError

    def _check(self) -> None:
        if self.should_fail():
            raise OperationalError("BEGIN", {}, ConnectionError("server closed the connection"))

    def begin(self) -> Any:
        self._check()
        return self.engine.begin()

    def connect(self) -> Any:
        self._check()
        return self.engine.connect()
