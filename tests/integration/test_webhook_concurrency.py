"""Two dispatchers claiming at once (two threads, real transactions, on every backend): an
endpoint's rate limit holds across them, and an endpoint never has two deliveries in
flight. Time is the claims' own (`now`), stepped in lockstep by both threads, so that
every step is contended; nothing is asserted on the wall clock."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime

from sqlalchemy import Engine

from outbound import endpoints as endpoint_store
from outbound.deliveries import create, subscribed
from outbound.ports import Outcome
from tests.outbound_helpers import (
    CONFIG,
    add_endpoint,
    at,
    claim,
    deliveries,
    make,
    outcome,
    settle,
)

OK = outcome(Outcome.DELIVERED, 200)
STEPS = 60
STEP_S = 0.1
RATE = 2.0  # deliveries per second


def _run_two(engine: Engine, hold_steps: int) -> list[tuple[str, datetime, str, int]]:
    """Both threads claim at step k's time; each delivery is recorded `hold_steps` later
    (its lease is live meanwhile). Returns (owner, time, endpoint, delivery id) per claim."""
    barrier = threading.Barrier(2, timeout=60)
    claims: list[tuple[str, datetime, str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(owner: str) -> None:
        held: list[tuple[int, object]] = []
        try:
            for k in range(STEPS):
                now = at(k * STEP_S)
                barrier.wait()
                for _due, c in [h for h in held if h[0] <= k]:
                    settle(engine, c, OK, now)  # type: ignore[arg-type]
                held = [h for h in held if h[0] > k]
                for c in claim(engine, now, owner=owner):
                    with lock:
                        claims.append((owner, now, c.endpoint_id, c.id))
                    held.append((k + hold_steps, c))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    return claims


def test_the_rate_limit_holds_across_two_dispatchers(engine: Engine) -> None:
    add_endpoint(engine, "ep_slow", rate_limit_per_s=RATE)
    add_endpoint(engine, "ep_free")
    for n in range(40):
        make(engine, f"ev-{n}")
    claims = _run_two(engine, hold_steps=0)
    limited = sorted(t for _, t, ep, _ in claims if ep == "ep_slow")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(limited)]
    assert all(gap >= 1 / RATE - 1e-6 for gap in gaps), gaps
    # Any one-second window of claim times holds at most RATE claims...
    for start in limited:
        assert sum(1 for t in limited if 0 <= (t - start).total_seconds() < 1) <= RATE
    # ...and the limit is what paces it: it was claimed about every 1/RATE seconds.
    assert len(limited) >= STEPS * STEP_S * RATE - 1
    # The unlimited endpoint went at the steps' pace, both owners taking turns.
    free = [c for c in claims if c[2] == "ep_free"]
    assert len(free) == 40
    assert {owner for owner, *_ in claims} == {"a", "b"}


def test_an_endpoint_never_has_two_deliveries_in_flight(engine: Engine) -> None:
    for n in range(3):
        add_endpoint(engine, f"ep_{n}")
    for n in range(15):
        make(engine, f"ev-{n}")
    claims = _run_two(engine, hold_steps=3)
    ids = [c[3] for c in claims]
    assert len(ids) == len(set(ids)), "no delivery is claimed twice"
    assert {r.status for r in deliveries(engine)} == {"delivered"}
    by_endpoint: dict[str, list[datetime]] = {}
    for _, t, ep, _ in claims:
        by_endpoint.setdefault(ep, []).append(t)
    for times in by_endpoint.values():
        times.sort()
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        # Each is held 3 steps: the next one of its endpoint comes no sooner.
        assert all(gap >= 3 * STEP_S - 1e-6 for gap in gaps), gaps


def test_a_disable_during_a_fan_out_waits_for_it_and_cancels_what_it_made(engine: Engine) -> None:
    """The fan-out read the endpoint as enabled; a disable that committed before the fan-out
    inserted would leave a pending delivery no dispatcher ever claims. The fan-out's lock
    makes the disable wait, then cancel it."""
    add_endpoint(engine, "ep_x")
    done: dict[str, int] = {}
    errors: list[BaseException] = []

    def disable_it() -> None:
        try:
            with engine.begin() as conn:
                done["cancelled"] = endpoint_store.disable(conn, "ep_x", "tenant asked", at(1))
        except BaseException as exc:
            errors.append(exc)

    disabling = threading.Thread(target=disable_it)
    with engine.connect() as conn, conn.begin():
        found = subscribed(conn, "t-1", "order.paid", CONFIG)
        assert [ep.id for ep in found] == ["ep_x"]
        disabling.start()
        disabling.join(timeout=2)  # without the lock the disable commits here, first
        create(
            conn,
            event_id="ev-1",
            event_type="order.paid",
            tenant_id="t-1",
            occurred_at=at(0),
            payload={"order_id": "o-1"},
            endpoints=found,
            now=at(0),
        )
    disabling.join(timeout=60)
    assert not disabling.is_alive() and not errors, errors
    assert done == {"cancelled": 1}
    assert [row.status for row in deliveries(engine)] == ["cancelled"]
