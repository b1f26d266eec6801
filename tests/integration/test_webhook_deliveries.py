"""The deliveries store on every backend (SQLite, PostgreSQL, MariaDB): idempotent creation,
the claim's per-endpoint rules, the outcomes' effects on deliveries and endpoint health, and
the endpoints' events written through the outbox (ADR 021)."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import Engine, func, select, update

from domain.schema import domain_events
from outbound.health import GONE_REASON
from outbound.ports import Outcome
from outbound.retention import prune_webhooks, webhooks_to_prune
from outbox.schema import outbox_table
from outbox.schema_webhooks import webhook_attempts_table as attempts
from outbox.schema_webhooks import webhook_deliveries_table as d
from tests.outbound_helpers import (
    T0,
    add_endpoint,
    at,
    claim,
    deliveries,
    endpoint,
    make,
    outcome,
    settle,
)

FAIL = outcome(Outcome.FAILED, 500)
OK = outcome(Outcome.DELIVERED, 200)


def _count(engine: Engine, table: object, *where: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


def test_a_redelivered_event_adds_no_delivery(engine: Engine) -> None:
    add_endpoint(engine, "ep_a")
    add_endpoint(engine, "ep_b", event_types=("order.*",))
    add_endpoint(engine, "ep_other", event_types=("product.*",))
    add_endpoint(engine, "ep_t2", tenant_id="t-2")
    add_endpoint(engine, "ep_off", state="disabled")
    assert make(engine, "ev-1") == 2
    assert make(engine, "ev-1") == 0
    rows = deliveries(engine)
    assert [(r.endpoint_id, r.status, r.attempts) for r in rows] == [
        ("ep_a", "pending", 0),
        ("ep_b", "pending", 0),
    ]
    assert rows[0].webhook_id != rows[1].webhook_id
    assert json.loads(rows[0].payload)["id"] == "ev-1"


def test_the_excluded_type_is_never_delivered(engine: Engine) -> None:
    add_endpoint(engine, "ep_a")
    assert make(engine, "ev-1", event_type="payment.webhook_received") == 0


def test_a_claim_takes_one_per_endpoint_and_none_while_one_is_in_flight(engine: Engine) -> None:
    add_endpoint(engine, "ep_a")
    add_endpoint(engine, "ep_b")
    for n in range(3):
        make(engine, f"ev-{n}")
    first = claim(engine, T0)
    assert sorted(c.endpoint_id for c in first) == ["ep_a", "ep_b"]
    assert claim(engine, at(1), owner="b") == []  # both endpoints have one in flight
    settle(engine, first[0], OK, at(1))
    again = claim(engine, at(2), owner="b")
    assert [c.endpoint_id for c in again] == [first[0].endpoint_id]
    assert again[0].webhook_id != first[0].webhook_id


def test_an_expired_lease_is_claimed_again_and_the_lost_one_writes_nothing(
    engine: Engine,
) -> None:
    add_endpoint(engine, "ep_a")
    make(engine, "ev-1")
    (lost,) = claim(engine, T0, owner="a")
    assert claim(engine, at(29), owner="b") == []
    (taken,) = claim(engine, at(31), owner="b")
    assert taken.id == lost.id
    assert taken.webhook_id == lost.webhook_id
    assert taken.attempt == lost.attempt == 1
    assert not settle(engine, lost, OK, at(32))
    assert _count(engine, attempts) == 0
    assert deliveries(engine)[0].status == "delivering"
    assert settle(engine, taken, OK, at(33))
    row = deliveries(engine)[0]
    assert (row.status, row.attempts, row.lease_owner) == ("delivered", 1, None)
    assert _count(engine, attempts) == 1


def test_an_ordered_endpoint_holds_its_later_deliveries_behind_a_failing_head(
    engine: Engine,
) -> None:
    add_endpoint(engine, "ep_ord", ordered=True)
    add_endpoint(engine, "ep_free")
    for n in range(3):
        make(engine, f"ev-{n}")
    ordered_ids = [r.id for r in deliveries(engine) if r.endpoint_id == "ep_ord"]
    now, free_sent = T0, []
    # The ordered head fails twice (schedule 0, 10, 100); meanwhile ep_free delivers all.
    for step in range(6):
        for c in claim(engine, now):
            if c.endpoint_id == "ep_ord":
                assert c.id == ordered_ids[0], "only the head of an ordered endpoint is sent"
                settle(engine, c, FAIL, now)
            else:
                free_sent.append(c.event_id)
                settle(engine, c, OK, now)
        now = at(step + 1)
    assert free_sent == ["ev-0", "ev-1", "ev-2"]
    statuses = {r.id: r.status for r in deliveries(engine)}
    assert [statuses[i] for i in ordered_ids] == ["pending", "pending", "pending"]
    # The head's retry comes due (10 s after its first failure): it succeeds, then the rest
    # follow in order.
    sent = []
    now = at(11)
    for step in range(4):
        for c in claim(engine, now):
            sent.append(c.id)
            settle(engine, c, OK, now)
        now = at(12 + step)
    assert sent == ordered_ids


def test_an_ordered_head_that_failed_for_good_no_longer_holds_the_rest(engine: Engine) -> None:
    add_endpoint(engine, "ep_ord", ordered=True)
    make(engine, "ev-0")
    make(engine, "ev-1")
    now = T0
    for t in (0, 10, 100):  # the whole schedule fails
        (c,) = claim(engine, now + timedelta(seconds=t + 1))
        assert c.event_id == "ev-0"
        settle(engine, c, FAIL, now + timedelta(seconds=t + 1))
        now = now + timedelta(seconds=t)
    assert deliveries(engine)[0].status == "failed"
    (nxt,) = claim(engine, at(1000))
    assert nxt.event_id == "ev-1"


def test_an_unordered_endpoint_keeps_flowing_past_a_failure(engine: Engine) -> None:
    add_endpoint(engine, "ep_a")
    for n in range(3):
        make(engine, f"ev-{n}")
    sent = []
    now = T0
    for step in range(3):
        (c,) = claim(engine, now)
        sent.append(c.event_id)
        settle(engine, c, FAIL if c.event_id == "ev-0" else OK, now)
        now = at(step + 1)
    assert sent == ["ev-0", "ev-1", "ev-2"]
    assert [r.status for r in deliveries(engine)] == ["pending", "delivered", "delivered"]


def test_the_breaker_opens_after_n_failures_half_opens_and_closes_on_success(
    engine: Engine,
) -> None:
    add_endpoint(engine, "ep_a")
    for n in range(5):
        make(engine, f"ev-{n}")
    for n in range(3):  # breaker_failures = 3
        (c,) = claim(engine, at(n))
        settle(engine, c, FAIL, at(n))
    ep = endpoint(engine, "ep_a")
    assert (ep.state, ep.consecutive_failures, ep.paused_until) == ("paused", 3, at(62))
    assert ep.failing_since == T0
    assert claim(engine, at(61)) == []  # deliveries wait, nothing dropped
    assert {r.status for r in deliveries(engine)} == {"pending"}
    (probe,) = claim(engine, at(62))
    assert probe.half_open
    assert claim(engine, at(62), owner="b") == []  # one probe at a time
    settle(engine, probe, FAIL, at(63))  # the probe fails: paused again, no second event
    ep = endpoint(engine, "ep_a")
    assert (ep.state, ep.paused_until) == ("paused", at(123))
    (probe,) = claim(engine, at(123))
    settle(engine, probe, OK, at(123))
    ep = endpoint(engine, "ep_a")
    assert (ep.state, ep.consecutive_failures, ep.failing_since, ep.paused_until) == (
        "enabled",
        0,
        None,
        None,
    )
    with engine.connect() as conn:
        types = list(conn.execute(select(domain_events.c.type)).scalars())
        topics = list(conn.execute(select(outbox_table.c.topic, outbox_table.c.key)).all())
    assert types == ["webhook_endpoint.paused"]
    assert [tuple(t) for t in topics] == [("webhook-events", "ep_a")]


def test_five_days_of_failure_disable_the_endpoint_and_cancel_its_deliveries(
    engine: Engine,
) -> None:
    add_endpoint(engine, "ep_a")
    make(engine, "ev-0")
    make(engine, "ev-1")
    day = 86400.0
    now = 0.0
    while now < 5 * day + 3600:  # a probe every hour; the schedule alone would give up
        with engine.begin() as conn:  # keep both deliveries pending (the schedule is short)
            conn.execute(update(d).where(d.c.status == "failed").values(status="pending"))
        got = claim(engine, at(now))
        for c in got:
            settle(engine, c, FAIL, at(now))
        if endpoint(engine, "ep_a").state == "disabled":
            break
        now += 3600
    ep = endpoint(engine, "ep_a")
    assert ep.state == "disabled"
    assert now >= 5 * day
    assert ep.disabled_reason.startswith(f"failing since {T0.isoformat()}")
    assert ep.disabled_reason.endswith("(5 days)")
    # The attempt that tipped it over ran out of schedule; the other one is cancelled.
    assert sorted(r.status for r in deliveries(engine)) == ["cancelled", "failed"]
    with engine.connect() as conn:
        query = select(domain_events.c.type).order_by(domain_events.c.version)
        types = list(conn.execute(query).scalars())
    assert types == ["webhook_endpoint.paused", "webhook_endpoint.disabled"]
    assert claim(engine, at(now + day)) == []


def test_410_disables_cancels_and_writes_the_event_with_its_outbox_row(engine: Engine) -> None:
    add_endpoint(engine, "ep_gone")
    add_endpoint(engine, "ep_ok")
    for n in range(3):
        make(engine, f"ev-{n}")
    for c in claim(engine, T0):
        settle(engine, c, outcome(Outcome.GONE, 410) if c.endpoint_id == "ep_gone" else OK, T0)
    ep = endpoint(engine, "ep_gone")
    assert (ep.state, ep.disabled_reason, ep.version) == ("disabled", GONE_REASON, 2)
    by = {(r.endpoint_id, r.event_id): r.status for r in deliveries(engine)}
    assert {s for (e, _), s in by.items() if e == "ep_gone"} == {"cancelled"}
    assert by[("ep_ok", "ev-0")] == "delivered"
    with engine.connect() as conn:
        event = conn.execute(select(domain_events)).one()
        row = conn.execute(select(outbox_table)).one()
    assert (event.type, event.aggregate_type, event.aggregate_id, event.version) == (
        "webhook_endpoint.disabled",
        "webhook_endpoint",
        "ep_gone",
        2,
    )
    assert json.loads(event.payload) == {
        "tenant_id": "t-1",
        "endpoint_id": "ep_gone",
        "reason": GONE_REASON,
    }
    assert (row.event_id, row.topic, row.key, row.status) == (
        event.event_id,
        "webhook-events",
        "ep_gone",
        "pending",
    )
    assert json.loads(row.headers)["tenant_id"] == "t-1"
    # Nothing more goes to it.
    assert all(c.endpoint_id == "ep_ok" for c in claim(engine, at(1000)))


def test_a_refused_destination_fails_the_delivery_at_once(engine: Engine) -> None:
    add_endpoint(engine, "ep_a")
    make(engine, "ev-0")
    (c,) = claim(engine, T0)
    reason = "169.254.169.254 is link-local"
    refused = outcome(Outcome.REFUSED, None, error="DestinationRefused", excerpt=reason)
    settle(engine, c, refused, T0)
    row = deliveries(engine)[0]
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, f"refused: {reason}")
    assert endpoint(engine, "ep_a").consecutive_failures == 0
    assert claim(engine, at(1000)) == []


def test_throttled_waits_for_retry_after_and_every_attempt_is_logged(engine: Engine) -> None:
    add_endpoint(engine, "ep_a")
    make(engine, "ev-0")
    (c,) = claim(engine, T0)
    settle(engine, c, outcome(Outcome.THROTTLED, 429, retry_after_s=40.0), T0)
    assert deliveries(engine)[0].next_attempt_at == at(40)  # schedule says 10, Retry-After 40
    assert claim(engine, at(39)) == []
    (c,) = claim(engine, at(40))
    assert c.attempt == 2
    settle(engine, c, OK, at(41))
    with engine.connect() as conn:
        log = conn.execute(select(attempts).order_by(attempts.c.id)).all()
    assert [(r.attempt, r.outcome, r.status_code, r.webhook_id) for r in log] == [
        (1, "throttled", 429, c.webhook_id),
        (2, "delivered", 200, c.webhook_id),
    ]


def test_prune_deletes_old_attempts_and_finished_deliveries_only(engine: Engine) -> None:
    add_endpoint(engine, "ep_a")
    add_endpoint(engine, "ep_b")
    make(engine, "ev-0")
    for c in claim(engine, T0):
        settle(engine, c, OK if c.endpoint_id == "ep_a" else FAIL, T0)
    cutoff = at(1)
    with engine.connect() as conn:
        assert webhooks_to_prune(conn, cutoff) == {"webhook_attempts": 2, "webhook_deliveries": 1}
    assert prune_webhooks(engine, cutoff, batch_size=1) == {
        "webhook_attempts": 2,
        "webhook_deliveries": 1,
    }
    assert [(r.endpoint_id, r.status) for r in deliveries(engine)] == [("ep_b", "pending")]
