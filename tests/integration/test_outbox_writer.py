"""`outbox.append` writes in the caller's transaction and never commits."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select

from outbox import Envelope, append, outbox_table, shard_for
from outbox.types import utcnow
from tests.queries import count_rows

pytestmark = pytest.mark.integration


def _envelopes(n: int) -> list[Envelope]:
    at = utcnow()
    return [
        Envelope(
            event_id=f"00000000-0000-0000-0000-{i:012d}",
            topic="jobs",
            key="job-1",
            type="scheduled.job_due",
            payload=json.dumps({"n": i}),
            occurred_at=at,
            headers={"correlation_id": "c-1"},
        )
        for i in range(n)
    ]


def test_rows_vanish_with_the_callers_rollback(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.begin()
        assert append(conn, _envelopes(3), shards=8) == 3
        conn.rollback()
    assert count_rows(engine, outbox_table) == 0


def test_rows_commit_with_the_caller_in_order(engine: Engine) -> None:
    with engine.begin() as conn:
        append(conn, _envelopes(3), shards=8)
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_table).order_by(outbox_table.c.id)).all()
    assert [json.loads(r.payload)["n"] for r in rows] == [0, 1, 2]
    assert {r.shard for r in rows} == {shard_for("job-1", 8)}
    assert all(r.status == "pending" and r.attempts == 0 for r in rows)
