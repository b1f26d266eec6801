"""The endpoint health figures computed in SQL equal the nearest-rank definition computed
in Python, for any set of durations and outcomes (hypothesis, on SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete

from outbound.attempt_log import endpoint_health
from outbox.schema_webhooks import (
    webhook_attempts_table,
    webhook_deliveries_table,
    webhook_endpoints_table,
)
from outbox.types import utcnow
from tests.webhook_ops_helpers import add_attempt, add_delivery, add_endpoint

pytestmark = pytest.mark.integration

ATTEMPTS = st.lists(st.tuples(st.integers(0, 120_000), st.booleans()), min_size=1, max_size=60)


def _rank(durations: list[int], p: int) -> int:
    ordered = sorted(durations)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(per_endpoint=st.lists(ATTEMPTS, min_size=1, max_size=3))
def test_health_matches_the_nearest_rank_definition(
    engine: Engine, per_endpoint: list[list[tuple[int, bool]]]
) -> None:
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        for table in (webhook_attempts_table, webhook_deliveries_table, webhook_endpoints_table):
            conn.execute(delete(table))
        for n, tries in enumerate(per_endpoint):
            endpoint_id = add_endpoint(conn, f"ep_{n}", now)
            delivery_id = add_delivery(conn, "ev-1", endpoint_id, now)
            for k, (ms, ok) in enumerate(tries):
                at = now - timedelta(seconds=k + 1)
                outcome = "delivered" if ok else "failed"
                add_attempt(conn, delivery_id, at, duration_ms=ms, outcome=outcome)
    with engine.connect() as conn:
        health = endpoint_health(conn, now - timedelta(hours=1), now)
    assert set(health) == {f"ep_{n}" for n in range(len(per_endpoint))}
    for n, tries in enumerate(per_endpoint):
        found = health[f"ep_{n}"]
        durations = [ms for ms, _ in tries]
        delivered = sum(ok for _, ok in tries)
        assert (found.attempts, found.delivered) == (len(tries), delivered)
        assert found.success_rate == pytest.approx(delivered / len(tries))
        assert (found.p50_ms, found.p95_ms) == (_rank(durations, 50), _rank(durations, 95))
