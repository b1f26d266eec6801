"""Runs (outbound.claims, outbound.dispatcher) on every backend: a claim hands a dispatcher up
to `per_endpoint` of an endpoint's due deliveries, which it sends one after another; the rules
of one-at-a-time, order, the breaker's probe and the rate limit hold; a run cut short gives the
rest back, fenced on its lease. An unordered endpoint's run goes out on several lanes at
once, an ordered one's on one, and a lane's failure halts its run's other lanes."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from outbound.claims import Claimed, claim_due, release
from outbound.deliveries import create, subscribed
from outbound.dispatcher import Dispatcher
from outbound.health import record
from outbound.lanes import Run
from outbound.ports import Outcome, SigningKey
from outbox.notify import WEBHOOKS_CHANNEL
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e
from outbox.wakeup import PgListener
from tests.outbound_helpers import (
    CONFIG,
    T0,
    FailingEngine,
    add_endpoint,
    at,
    deliveries,
    make,
    outcome,
    settle,
)
from tests.outbound_receiver import Answer, HttpxSender, Receiver

# One lane per run here (the rules of a run); lanes are tested at the end.
RUNS = replace(
    CONFIG, lease_s=60, poll_interval_s=0.05, concurrency=4, per_endpoint=3, endpoint_concurrency=1
)


def _claim(engine: Engine, now: datetime, *, owner: str = "a", per_endpoint: int = 3) -> Any:
    with engine.begin() as conn:
        return claim_due(conn, owner, now, 10, RUNS, per_endpoint=per_endpoint)


def _ids(claimed: list[Claimed], endpoint_id: str) -> list[int]:
    return [c.id for c in claimed if c.endpoint_id == endpoint_id]


def test_a_claim_takes_the_oldest_due_of_each_endpoint_up_to_the_run_length(
    engine: Engine,
) -> None:
    add_endpoint(engine, "ep_a")
    add_endpoint(engine, "ep_b")
    for n in range(5):
        make(engine, f"ev-{n}")
    rows = deliveries(engine)
    first = _claim(engine, at(1))
    a_ids = [r.id for r in rows if r.endpoint_id == "ep_a"]
    b_ids = [r.id for r in rows if r.endpoint_id == "ep_b"]
    assert _ids(first, "ep_a") == a_ids[:3]
    assert _ids(first, "ep_b") == b_ids[:3]
    assert len({c.lease_owner for c in first}) == 1
    assert all(c.attempt == 1 and c.secret_tokens == ("not-a-secret",) for c in first)
    # While a run is live its endpoint gets nothing, whoever asks.
    assert _claim(engine, at(2), owner="b") == []
    # The run's outcomes written, the rest of each endpoint comes in the next claim.
    for c in first:
        assert settle(engine, c, outcome(Outcome.DELIVERED, 200), at(2))
    second = _claim(engine, at(3), owner="b")
    assert _ids(second, "ep_a") == a_ids[3:]
    assert _ids(second, "ep_b") == b_ids[3:]


def test_an_ordered_run_stops_at_the_first_delivery_that_is_not_due(engine: Engine) -> None:
    add_endpoint(engine, "ep_o", ordered=True)
    for n in range(5):
        make(engine, f"ev-{n}")
    ids = [r.id for r in deliveries(engine)]
    with engine.begin() as conn:  # the third waits for a retry
        conn.execute(update(d).where(d.c.id == ids[2]).values(next_attempt_at=at(100)))
    assert _ids(_claim(engine, at(1), per_endpoint=5), "ep_o") == ids[:2]
    # An unordered endpoint in the same state skips the one that waits.
    with engine.begin() as conn:
        conn.execute(update(e).where(e.c.id == "ep_o").values(ordered=False))
        conn.execute(
            update(d)
            .where(d.c.id.in_(ids[:2]))
            .values(status="pending", lease_owner=None, lease_expires_at=None)
        )
    assert _ids(_claim(engine, at(2), per_endpoint=5), "ep_o") == [*ids[:2], *ids[3:]]


def test_the_breakers_probe_and_a_rate_limited_endpoint_get_one_at_a_time(
    engine: Engine,
) -> None:
    add_endpoint(engine, "ep_paused", state="paused")
    add_endpoint(engine, "ep_limited", rate_limit_per_s=2)
    for n in range(4):
        make(engine, f"ev-{n}")
    with engine.begin() as conn:
        conn.execute(update(e).where(e.c.id == "ep_paused").values(paused_until=at(1)))
    claimed = _claim(engine, at(2))
    assert len(_ids(claimed, "ep_paused")) == 1
    assert [c.half_open for c in claimed if c.endpoint_id == "ep_paused"] == [True]
    assert len(_ids(claimed, "ep_limited")) == 1


def test_one_claim_mixing_ordered_unordered_and_limited_endpoints_keeps_each_ones_rules(
    engine: Engine,
) -> None:
    # The runs' statement is built once per shape and bound per claim: each endpoint's arm
    # must get its own id, run length and rule, in whatever order the candidates come.
    add_endpoint(engine, "ep_1_ordered", ordered=True)
    add_endpoint(engine, "ep_2_plain")
    add_endpoint(engine, "ep_3_limited", rate_limit_per_s=2)
    for n in range(5):
        make(engine, f"ev-{n}")
    rows = deliveries(engine)
    mine = {ep: [r.id for r in rows if r.endpoint_id == ep] for ep in {r.endpoint_id for r in rows}}
    with engine.begin() as conn:  # the ordered endpoint's third waits for a retry
        conn.execute(
            update(d).where(d.c.id == mine["ep_1_ordered"][2]).values(next_attempt_at=at(100))
        )
    for step in (1, 2):  # the second claim reuses the first one's statement
        claimed = _claim(engine, at(step), owner=f"o{step}")
        if step == 1:
            assert _ids(claimed, "ep_1_ordered") == mine["ep_1_ordered"][:2]
            assert _ids(claimed, "ep_2_plain") == mine["ep_2_plain"][:3]
            assert _ids(claimed, "ep_3_limited") == mine["ep_3_limited"][:1]
        else:  # the ordered one holds at its waiting head; the others go on
            assert _ids(claimed, "ep_1_ordered") == []
            assert _ids(claimed, "ep_2_plain") == mine["ep_2_plain"][3:]
            assert _ids(claimed, "ep_3_limited") == mine["ep_3_limited"][1:2]
        for c in claimed:
            assert settle(engine, c, outcome(Outcome.DELIVERED, 200), at(step))
        with engine.begin() as conn:  # the rate limit's step has passed
            conn.execute(update(e).values(next_send_at=None))


def test_release_gives_back_a_run_fenced_on_its_lease(engine: Engine) -> None:
    add_endpoint(engine, "ep_a")
    for n in range(3):
        make(engine, f"ev-{n}")
    run = _claim(engine, at(1))
    assert len(run) == 3
    forged = [replace(c, lease_owner="someone-else/0") for c in run[1:]]
    with engine.begin() as conn:
        assert release(conn, forged) == 0  # not its lease: nothing changes
        assert release(conn, run[1:]) == 2
        assert release(conn, run[1:]) == 0  # once
    rows = deliveries(engine)
    assert [(r.status, r.attempts, r.lease_owner) for r in rows[1:]] == [("pending", 0, None)] * 2
    assert rows[0].status == "delivering"


def _keys(claimed: Claimed) -> list[SigningKey]:
    return [SigningKey("v1", b"k" * 32)]


def _sign(keys: list[SigningKey], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}


def _run_once(engine: Engine, config: Any) -> tuple[Dispatcher, int]:
    """A dispatcher with the test sender, after one `run_once`: it and what it claimed."""
    sender = HttpxSender()
    try:
        dispatcher = Dispatcher(engine, sender, _keys, _sign, config, "d-1", shards=4)
        return dispatcher, dispatcher.run_once()
    finally:
        sender.close()


def _endpoint_a(engine: Engine, receiver: Receiver, answers: list[Answer], events: int) -> datetime:
    """Endpoint ep_a at the receiver's /a answering `answers`, and `events` deliveries to it
    due now; returns that now."""
    receiver.answer("/a", *answers)
    add_endpoint(engine, "ep_a", url=receiver.url("/a"))
    now = datetime.now(UTC)
    for n in range(events):
        make(engine, f"ev-{n}", now=now)
    return now


def test_a_run_stops_at_its_first_failure_and_gives_the_rest_back(engine: Engine) -> None:
    with Receiver() as receiver:
        now = _endpoint_a(engine, receiver, [Answer(500)], events=3)
        dispatcher, claimed = _run_once(engine, RUNS)
        assert dispatcher.per_endpoint == 3
        assert claimed == 3
        assert len(receiver.on("/a")) == 1
    rows = deliveries(engine)
    assert [(r.status, r.attempts) for r in rows] == [
        ("pending", 1),
        ("pending", 0),
        ("pending", 0),
    ]
    assert rows[0].next_attempt_at.replace(tzinfo=UTC) > now  # its retry waits; the rest do not
    assert all(r.next_attempt_at.replace(tzinfo=UTC) <= now for r in rows[1:])


class _FailingFrom(FailingEngine):
    """The real engine, whose transactions fail as a lost connection does from the
    `first`-th on (1-based), while `failing`."""

    def __init__(self, engine: Engine, first: int) -> None:
        super().__init__(engine)
        self.first, self.begun, self.failing = first, 0, True

    def should_fail(self) -> bool:
        self.begun += 1
        return self.failing and self.begun >= self.first


def test_a_run_whose_rest_cannot_be_given_back_is_sent_after_its_lease(engine: Engine) -> None:
    with Receiver() as receiver:
        _endpoint_a(engine, receiver, [Answer(500), Answer(200)], events=3)
        flaky = _FailingFrom(engine, first=3)  # the claim and the first record go through
        later = [datetime.now(UTC)]
        sender = HttpxSender()
        try:
            broken = Dispatcher(
                flaky, sender, _keys, _sign, RUNS, "d-1", lambda: later[0],  # type: ignore[arg-type]
                shards=4, backoff_s=(0.01, 0.01),
            )  # fmt: skip
            assert broken.run_once() == 3
            assert len(receiver.on("/a")) == 1
            rows = deliveries(engine)  # the release failed: the rest stay leased, not lost
            assert [(r.status, r.attempts) for r in rows] == [
                ("pending", 1),
                ("delivering", 0),
                ("delivering", 0),
            ]
            healthy = Dispatcher(
                engine, sender, _keys, _sign, RUNS, "d-2", lambda: later[0], shards=4
            )
            assert healthy.run_once() == 0  # their lease is live
            later[0] += timedelta(seconds=RUNS.lease_s + 1)
            assert healthy.run_once() == 3  # the failed one's retry (10 s) is due too
        finally:
            sender.close()
        assert [(r.status, r.attempts) for r in deliveries(engine)] == [
            ("delivered", 2),
            ("delivered", 1),
            ("delivered", 1),
        ]
        assert len(receiver.on("/a")) == 4  # the two given back were never sent twice


def test_a_run_never_starts_a_send_its_lease_cannot_cover(engine: Engine) -> None:
    offset = [0.0]
    with Receiver() as receiver:
        _endpoint_a(engine, receiver, [Answer(200)], events=4)

        def clock() -> datetime:  # each send takes 20 s of this clock
            return datetime.now(UTC) + timedelta(seconds=offset[0])

        class Slow(HttpxSender):
            def send(self, url: str, body: bytes, headers: dict[str, str]) -> Any:
                offset[0] += 20.0
                return super().send(url, body, headers)

        sender = Slow()
        try:
            dispatcher = Dispatcher(
                engine, sender, _keys, _sign, replace(RUNS, per_endpoint=4), "d-1", clock, shards=4
            )
            stop = threading.Event()
            run = _claim(engine, clock(), per_endpoint=4)
            dispatcher.send_run(run, stop)
        finally:
            sender.close()
        # Lease 60 s, an attempt needs 5 + 15 + 1: sent at +0 and +20, not at +40.
        assert len(receiver.on("/a")) == 2
    assert [r.status for r in deliveries(engine)] == ["delivered"] * 2 + ["pending"] * 2


def test_a_short_lease_claims_one_delivery_at_a_time() -> None:
    short = replace(RUNS, lease_s=5, connect_timeout_s=1, total_timeout_s=2)  # 2 x 4 > 5
    dispatcher = Dispatcher(None, None, _keys, _sign, short, "d", shards=4)  # type: ignore[arg-type]
    assert dispatcher.per_endpoint == 1
    assert Dispatcher(None, None, _keys, _sign, RUNS, "d", shards=4).per_endpoint == 3  # type: ignore[arg-type]


def test_an_idle_dispatcher_is_woken_by_the_commit_not_by_its_poll(postgres_db: Engine) -> None:
    """PostgreSQL: the deliveries' commit notifies (outbox.notify.WEBHOOKS_CHANNEL); with a
    60 s poll interval only the notification can explain a prompt send."""
    with Receiver() as receiver:
        receiver.answer("/a", Answer(200))
        add_endpoint(postgres_db, "ep_a", url=receiver.url("/a"))
        sender = HttpxSender()
        config = replace(RUNS, poll_interval_s=60)
        dispatcher = Dispatcher(postgres_db, sender, _keys, _sign, config, "d-1", shards=4)
        stop = threading.Event()
        thread = threading.Thread(target=dispatcher.run, args=(stop,))
        with capture_logs() as logs:
            thread.start()
            try:
                time.sleep(1.0)  # it claimed nothing, listens, and waits for up to 60 s
                assert receiver.on("/a") == []
                make(postgres_db, "ev-1", now=datetime.now(UTC))
                deadline = time.monotonic() + 20
                while not receiver.on("/a") and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(receiver.on("/a")) == 1
            finally:
                stop.set()
                thread.join(timeout=90)
                sender.close()
        assert not thread.is_alive()
        events = [entry["event"] for entry in logs]
        assert "webhook_dispatcher_stopped" in events
        assert "listen_failed" not in events  # the stop closed the listener quietly


def test_a_rolled_back_fan_out_notifies_nobody(postgres_db: Engine) -> None:
    add_endpoint(postgres_db, "ep_a")
    listener = PgListener(postgres_db, WEBHOOKS_CHANNEL)
    try:
        assert listener.wait(0.2) is False  # connects and listens; nothing yet
        with postgres_db.begin() as conn:
            endpoints = subscribed(conn, "t-1", "order.paid", CONFIG)
            create(
                conn,
                event_id="ev-rolled-back",
                event_type="order.paid",
                tenant_id="t-1",
                occurred_at=T0,
                payload={},
                endpoints=endpoints,
                now=T0,
            )
            conn.rollback()
        assert listener.wait(0.3) is False
        assert make(postgres_db, "ev-1") == 1
        assert listener.wait(5) is True
        assert make(postgres_db, "ev-1") == 0  # a redelivered event adds nothing...
        assert listener.wait(0.3) is False  # ...and wakes nobody
    finally:
        listener.close()


def test_a_delivered_record_of_a_healthy_endpoint_never_waits_for_its_row(
    postgres_db: Engine,
) -> None:
    """The quick record (outbound.health): nothing of a healthy endpoint's health changes
    when a delivery goes through, so its row is not locked; a failing endpoint's is."""
    add_endpoint(postgres_db, "ep_ok")
    add_endpoint(postgres_db, "ep_failing")
    for n in range(2):
        make(postgres_db, f"ev-{n}")
    with postgres_db.begin() as conn:
        conn.execute(update(e).where(e.c.id == "ep_failing").values(consecutive_failures=2))
    run = _claim(postgres_db, at(1), per_endpoint=1)
    ok = next(c for c in run if c.endpoint_id == "ep_ok")
    failing = next(c for c in run if c.endpoint_id == "ep_failing")
    assert (ok.healthy, failing.healthy) == (True, False)
    delivered = outcome(Outcome.DELIVERED, 200)

    def record_waiting_at_most(claimed: Claimed, timeout: str) -> bool:
        with postgres_db.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{timeout}'"))
            return record(conn, claimed, delivered, RUNS, at(2), Random(1), shards=4)

    with postgres_db.connect() as holder:  # an operator's command holding both rows
        holder.execute(select(e.c.id).with_for_update())
        assert record_waiting_at_most(ok, "2s")
        with pytest.raises(OperationalError):
            record_waiting_at_most(failing, "200ms")
        holder.rollback()
    assert settle(postgres_db, failing, outcome(Outcome.DELIVERED, 200), at(3))
    rows = {r.id: r.status for r in deliveries(postgres_db)}
    assert (rows[ok.id], rows[failing.id]) == ("delivered", "delivered")
    with postgres_db.connect() as conn:  # the failing one's health was reset by its record
        assert (
            conn.execute(
                select(e.c.consecutive_failures).where(e.c.id == "ep_failing")
            ).scalar_one()
            == 0
        )


LANES = replace(RUNS, concurrency=8, per_endpoint=6, endpoint_concurrency=3)


@pytest.mark.parametrize("endpoint_concurrency", [3, 1])
def test_a_slow_unordered_endpoint_gets_lanes_a_fast_or_ordered_one_one_at_a_time(
    engine: Engine, endpoint_concurrency: int
) -> None:
    """Answers of 0.3 s (>= lane_after_s) make /u's run take more lanes; /o is as slow but
    ordered; /f answers at once."""
    with Receiver() as receiver:
        for path in ("/u", "/o"):
            receiver.answer(path, Answer(200, delay_s=0.3))
        add_endpoint(engine, "ep_u", url=receiver.url("/u"))
        add_endpoint(engine, "ep_o", url=receiver.url("/o"), ordered=True)
        add_endpoint(engine, "ep_f", url=receiver.url("/f"))
        for n in range(6):
            make(engine, f"ev-{n}")
        config = replace(LANES, endpoint_concurrency=endpoint_concurrency)
        assert config.lane_after_s == 0.2  # the default
        dispatcher, claimed = _run_once(engine, config)
        assert claimed == 18
        assert receiver.peak == {"/u": endpoint_concurrency, "/o": 1, "/f": 1}
        assert dispatcher.lanes_opened == endpoint_concurrency - 1
        ordered_bodies = [r.body for r in receiver.on("/o")]
    assert [r.status for r in deliveries(engine)] == ["delivered"] * 18
    sent = {r.payload.encode(): r.id for r in deliveries(engine) if r.endpoint_id == "ep_o"}
    assert [sent[b] for b in ordered_bodies] == sorted(sent.values())  # commit order


def test_a_lane_that_is_not_delivered_halts_the_runs_other_lanes(engine: Engine) -> None:
    """A slow first answer opens two more lanes; of the three requests then in flight, the
    first answered is a 500 (at once), the two others 200 a second later: those lanes stop
    there, and the run's last two go back untried."""
    gate = threading.Event()
    with Receiver() as receiver:
        answers = [Answer(500, gate=gate), Answer(200, delay_s=1.0), Answer(200, delay_s=1.0)]
        receiver.answer("/u", Answer(200, delay_s=0.3), *answers, Answer(200))
        add_endpoint(engine, "ep_u", url=receiver.url("/u"))
        for n in range(6):
            make(engine, f"ev-{n}")

        def open_gate() -> None:  # once the three lanes' requests are all in flight
            deadline = time.monotonic() + 10
            while receiver.peak.get("/u", 0) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            gate.set()

        threading.Thread(target=open_gate, daemon=True).start()
        assert _run_once(engine, LANES)[1] == 6
        assert receiver.peak["/u"] == 3
        assert len(receiver.on("/u")) == 4
    outcomes = sorted((r.status, r.attempts) for r in deliveries(engine))
    assert outcomes == [("delivered", 1)] * 3 + [("pending", 0)] * 2 + [("pending", 1)]


def test_the_dispatchers_loop_opens_lanes_on_a_slow_endpoint_while_others_flow(
    engine: Engine,
) -> None:
    with Receiver() as receiver:
        receiver.answer("/slow", Answer(200, delay_s=0.3))
        add_endpoint(engine, "ep_slow", url=receiver.url("/slow"))
        add_endpoint(engine, "ep_f", url=receiver.url("/f"))
        for n in range(6):
            make(engine, f"ev-{n}")
        sender = HttpxSender()
        stop = threading.Event()
        dispatcher = Dispatcher(engine, sender, _keys, _sign, LANES, "d-1", shards=4)
        loop = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        loop.start()
        try:
            deadline = time.monotonic() + 30
            while len(receiver.received) < 12 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            loop.join(timeout=30)
            sender.close()
        assert not loop.is_alive()
        assert receiver.peak == {"/slow": 3, "/f": 1}
        assert dispatcher.lanes_opened == 2
    assert [r.status for r in deliveries(engine)] == ["delivered"] * 12


def test_an_endpoint_known_slow_gets_its_lanes_from_its_next_runs_start(engine: Engine) -> None:
    with Receiver() as receiver:
        receiver.answer("/u", Answer(200, delay_s=0.3))
        add_endpoint(engine, "ep_u", url=receiver.url("/u"))
        make(engine, "ev-first")
        sender = HttpxSender()
        try:
            dispatcher = Dispatcher(engine, sender, _keys, _sign, LANES, "d-1", shards=4)
            assert dispatcher.run_once() == 1  # one answer of 0.3 s: known slow
            assert dispatcher.slow.is_slow("ep_u")
            for n in range(3):
                make(engine, f"ev-{n}")
            with receiver._lock:
                receiver.peak.clear()
            assert dispatcher.run_once() == 3
        finally:
            sender.close()
        # All three at once (not one, then two more lanes after its answer).
        assert receiver.peak == {"/u": 3}
    assert [r.status for r in deliveries(engine)] == ["delivered"] * 4


def test_a_runs_first_delivery_is_sent_whichever_lane_takes_it(engine: Engine) -> None:
    """The lease's time left is checked before every delivery but the run's first (just
    claimed): also when a lane opened on a known-slow run takes it before the run's own
    lane (else a lease too short for two attempts would give it back, unsent, each claim)."""
    with Receiver() as receiver:
        now = _endpoint_a(engine, receiver, [Answer(200)], events=2)
        run = Run(_claim(engine, now), slow=True)

        def late() -> datetime:  # 50 s into a 60 s lease: no time for another attempt
            return datetime.now(UTC) + timedelta(seconds=50)

        sender = HttpxSender()
        try:
            dispatcher = Dispatcher(engine, sender, _keys, _sign, RUNS, "d-1", late, shards=4)
            dispatcher.send_run(run, threading.Event())
        finally:
            sender.close()
        assert len(receiver.on("/a")) == 1
    assert [r.status for r in deliveries(engine)] == ["delivered", "pending"]
