"""The attempt log on the three backends: filters, keyset paging newest first (ties on
`at` included, a pruned cursor row too), and each endpoint's health figures exact on a
known set of attempts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete

from outbound.attempt_log import Health, attempts, endpoint_health
from outbox.schema_webhooks import webhook_attempts_table
from outbox.types import utcnow
from tests.webhook_ops_helpers import add_attempt, add_delivery, add_endpoint

pytestmark = pytest.mark.integration


def _seed(engine: Engine) -> dict[str, object]:
    now = utcnow().replace(microsecond=0)
    ids: dict[str, list[int]] = {"a": [], "b": []}
    with engine.begin() as conn:
        add_endpoint(conn, "ep_a", now)
        add_endpoint(conn, "ep_b", now, tenant="globex")
        d1 = add_delivery(conn, "ev-1", "ep_a", now)
        d2 = add_delivery(conn, "ev-2", "ep_a", now, status="delivered")
        d3 = add_delivery(conn, "ev-1", "ep_b", now, status="delivered")
        for n in range(5):  # ev-1 -> ep_a: five failures, a minute apart
            at = now - timedelta(minutes=10 - n)
            ids["a"].append(add_attempt(conn, d1, at, outcome="failed", attempt=n + 1))
        # Two attempts at the same instant: the id breaks the tie.
        ids["a"].append(add_attempt(conn, d2, now - timedelta(minutes=2)))
        ids["a"].append(add_attempt(conn, d2, now - timedelta(minutes=2), attempt=2))
        ids["b"].append(add_attempt(conn, d3, now - timedelta(minutes=1)))
        ids["b"].append(add_attempt(conn, d3, now - timedelta(hours=3), outcome="gone"))
    return {"now": now, "ids": ids}


def test_filters_by_endpoint_event_failure_and_time(engine: Engine) -> None:
    seeded = _seed(engine)
    now = seeded["now"]
    assert isinstance(now, type(utcnow()))
    with engine.connect() as conn:
        everything = attempts(conn, limit=100)
        by_endpoint = attempts(conn, endpoint_id="ep_b")
        by_event = attempts(conn, event_id="ev-1")
        failed = attempts(conn, failed_only=True)
        recent = attempts(conn, since=now - timedelta(minutes=5))
        both = attempts(conn, endpoint_id="ep_a", event_id="ev-1", failed_only=True, limit=2)
    assert len(everything) == 9
    assert [r.at for r in everything] == sorted((r.at for r in everything), reverse=True)
    assert {r.endpoint_id for r in by_endpoint} == {"ep_b"} and len(by_endpoint) == 2
    assert {r.event_id for r in by_event} == {"ev-1"} and len(by_event) == 7
    assert {r.outcome for r in failed} == {"failed", "gone"} and len(failed) == 6
    assert all(r.at >= now - timedelta(minutes=5) for r in recent) and len(recent) == 3
    assert [r.attempt for r in both] == [5, 4]  # the newest two
    row = everything[0]
    assert row.as_dict()["webhook_id"].startswith("msg_")
    assert row.response_excerpt == "ok"


def test_pages_newest_first_without_gap_or_repeat_even_on_ties(engine: Engine) -> None:
    _seed(engine)
    with engine.connect() as conn:
        whole = [r.id for r in attempts(conn, endpoint_id="ep_a", limit=100)]
        paged: list[int] = []
        before = None
        while True:
            page = attempts(conn, endpoint_id="ep_a", limit=3, before_id=before)
            if not page:
                break
            paged += [r.id for r in page]
            before = page[-1].id
    assert len(whole) == 7
    assert paged == whole
    # The newest two share their instant: the higher id first.
    assert whole[0] > whole[1]


def test_a_pruned_cursor_row_still_pages_by_id(engine: Engine) -> None:
    seeded = _seed(engine)
    ids = seeded["ids"]
    assert isinstance(ids, dict)
    with engine.connect() as conn:
        first = attempts(conn, endpoint_id="ep_a", limit=3)
    cursor = first[-1].id
    with engine.begin() as conn:
        conn.execute(delete(webhook_attempts_table).where(webhook_attempts_table.c.id == cursor))
        rest = attempts(conn, endpoint_id="ep_a", limit=100, before_id=cursor)
    assert rest and all(r.id < cursor for r in rest)
    assert cursor not in {r.id for r in rest}


def test_health_figures_are_exact_on_a_known_set(engine: Engine) -> None:
    now = utcnow().replace(microsecond=0)
    since = now - timedelta(hours=1)
    with engine.begin() as conn:
        add_endpoint(conn, "ep_a", now)
        add_endpoint(conn, "ep_b", now)
        add_endpoint(conn, "ep_quiet", now)
        deliveries = [add_delivery(conn, f"ev-{n}", "ep_a", now) for n in range(20)]
        # ep_a: durations 200, 190, ..., 10 ms (stored out of order); the 5 slowest failed.
        for n, delivery_id in enumerate(deliveries):
            duration = 200 - 10 * n
            outcome = "failed" if duration > 150 else "delivered"
            add_attempt(
                conn, delivery_id, now - timedelta(minutes=50 - n), duration_ms=duration,
                outcome=outcome,
            )  # fmt: skip
        # Outside the window: before `since`, and at `now` (the window is [since, now)).
        add_attempt(conn, deliveries[0], since - timedelta(seconds=1), duration_ms=99_999)
        add_attempt(conn, deliveries[0], now, duration_ms=99_999, outcome="failed")
        single = add_delivery(conn, "ev-b", "ep_b", now)
        add_attempt(conn, single, now - timedelta(minutes=1), duration_ms=7, outcome="refused")
        add_attempt(conn, add_delivery(conn, "ev-q", "ep_quiet", now), since - timedelta(days=1))
    with engine.connect() as conn:
        health = endpoint_health(conn, since, now)
        only_b = endpoint_health(conn, since, now, endpoint_ids=["ep_b"])
        none = endpoint_health(conn, since, now, endpoint_ids=[])
    # Nearest rank: p50 of 20 is the 10th smallest (100 ms), p95 the 19th (190 ms).
    assert health == {
        "ep_a": Health(attempts=20, delivered=15, success_rate=0.75, p50_ms=100, p95_ms=190),
        "ep_b": Health(attempts=1, delivered=0, success_rate=0.0, p50_ms=7, p95_ms=7),
    }
    assert only_b == {"ep_b": health["ep_b"]}
    assert none == {}
