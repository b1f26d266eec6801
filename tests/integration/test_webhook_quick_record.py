"""outbound.quick_record on PostgreSQL: a delivered attempt to a healthy endpoint recorded in
one statement, in autocommit, writes exactly what outbound.health.record's two statements
write for it on another backend (SQLite), and what record() itself writes on PostgreSQL,
where it takes that way; a lost lease writes nothing, not even the attempt; any other
outcome is refused. The dispatcher's own runs on PostgreSQL (test_webhook_dispatcher,
test_webhook_runs, test_webhook_crash) record their deliveries this way, their DB-failure
fakes failing its autocommit connection too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from infra.db import make_engine
from infra.migrate import upgrade
from outbound.claims import Claimed, claim_due
from outbound.ports import Outcome, SendResult
from outbound.quick_record import is_quick, record_quick
from outbox.schema_webhooks import webhook_attempts_table as a
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e
from tests.outbound_helpers import CONFIG, add_endpoint, at, make, outcome, settle

pytestmark = pytest.mark.integration

_SAME = ["status", "attempts", "lease_owner", "lease_expires_at", "last_status_code"]
_SAME += ["last_error", "delivered_at"]
_ATTEMPT = ["attempt", "at", "duration_ms", "outcome", "status_code", "error"]
_ATTEMPT += ["response_excerpt", "event_id"]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database: where record() writes a delivery in two statements."""
    engine = make_engine(f"sqlite:///{tmp_path}/two-statements.db")
    upgrade(engine)
    yield engine
    engine.dispose()


def _claim_two(engine: Engine) -> tuple[Claimed, Claimed]:
    add_endpoint(engine, "ep_a")
    add_endpoint(engine, "ep_b")
    make(engine, "ev-1")
    with engine.begin() as conn:
        claimed = claim_due(conn, "q", at(1), 10, CONFIG, per_endpoint=1)
    by = {c.endpoint_id: c for c in claimed}
    return by["ep_a"], by["ep_b"]


def _quick(engine: Engine, claimed: Claimed, result: SendResult) -> bool:
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        return record_quick(conn, claimed, result, at(2))


def _written(engine: Engine, claimed: Claimed) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with engine.connect() as conn:
        row = conn.execute(select(d).where(d.c.id == claimed.id)).one()._asdict()
        tries = conn.execute(select(a).where(a.c.delivery_id == claimed.id)).all()
    # Each its own endpoint and webhook id; everything else the same.
    assert all(
        (t.endpoint_id, t.webhook_id) == (claimed.endpoint_id, claimed.webhook_id) for t in tries
    )
    return {k: row[k] for k in _SAME}, [{k: t._asdict()[k] for k in _ATTEMPT} for t in tries]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    code=st.integers(200, 299),
    duration=st.integers(-5, 120_000),
    # As the sender makes them (outbound.http): no NUL, which PostgreSQL's text refuses.
    excerpt=st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00"), max_size=300)),
)
def test_it_writes_what_the_full_record_writes(
    postgres_db: Engine, sqlite_db: Engine, code: int, duration: int, excerpt: str | None
) -> None:
    for engine in (postgres_db, sqlite_db):  # each example from an empty slate
        with engine.begin() as conn:
            for table in (a, d, e):
                conn.execute(table.delete())
    quick, through_record = _claim_two(postgres_db)
    two_statements, _ = _claim_two(sqlite_db)  # the same endpoint and event as `quick`
    result = SendResult(Outcome.DELIVERED, code, duration, excerpt=excerpt)
    assert is_quick(quick, result) and is_quick(two_statements, result)
    assert settle(sqlite_db, two_statements, result, at(2))
    assert _quick(postgres_db, quick, result)
    assert settle(postgres_db, through_record, result, at(2))  # record() on PostgreSQL
    expected = _written(sqlite_db, two_statements)
    assert expected[0]["status"] == "delivered" and len(expected[1]) == 1
    assert _written(postgres_db, quick) == expected
    assert _written(postgres_db, through_record) == expected


def test_a_lost_lease_writes_nothing_not_even_the_attempt(postgres_db: Engine) -> None:
    claimed, _ = _claim_two(postgres_db)
    with postgres_db.begin() as conn:  # the lease ran out and another dispatcher took it
        conn.execute(update(d).where(d.c.id == claimed.id).values(lease_owner="other/lease"))
    assert not _quick(postgres_db, claimed, outcome(Outcome.DELIVERED, 200))
    row, tries = _written(postgres_db, claimed)
    assert (row["status"], row["lease_owner"], tries) == ("delivering", "other/lease", [])


def test_any_other_outcome_or_an_unhealthy_endpoint_is_refused(postgres_db: Engine) -> None:
    claimed, _ = _claim_two(postgres_db)
    for result in (outcome(Outcome.FAILED, 500), outcome(Outcome.GONE, 410)):
        assert not is_quick(claimed, result)
        with pytest.raises(ValueError, match="healthy"):
            _quick(postgres_db, claimed, result)
    assert not is_quick(replace(claimed, healthy=False), outcome(Outcome.DELIVERED, 200))
    assert _written(postgres_db, claimed)[1] == []  # nothing was written
