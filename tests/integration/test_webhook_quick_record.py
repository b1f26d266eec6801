"""outbound.quick_record on PostgreSQL: a delivered attempt to a healthy endpoint recorded in
one statement, in autocommit, writes exactly what outbound.health.record writes for it; a
lost lease writes nothing, not even the attempt; any other outcome is refused; and the
dispatcher records its deliveries that way end to end."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

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
    postgres_db: Engine, code: int, duration: int, excerpt: str | None
) -> None:
    with postgres_db.begin() as conn:  # each example from an empty slate
        for table in (a, d, e):
            conn.execute(table.delete())
    full, quick = _claim_two(postgres_db)
    result = SendResult(Outcome.DELIVERED, code, duration, excerpt=excerpt)
    assert is_quick(full, result) and is_quick(quick, result)
    assert settle(postgres_db, full, result, at(2))
    assert _quick(postgres_db, quick, result)
    assert _written(postgres_db, quick) == _written(postgres_db, full)
    assert _written(postgres_db, quick)[0]["status"] == "delivered"


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
    sick = Claimed(**{**{f: getattr(claimed, f) for f in Claimed.__slots__}, "healthy": False})
    assert not is_quick(sick, outcome(Outcome.DELIVERED, 200))
    assert _written(postgres_db, claimed)[1] == []  # nothing was written
