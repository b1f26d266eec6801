"""A run shared by lanes (outbound.lanes.Run): every delivery taken by exactly one lane or
given back once, whatever the threads; more lanes only for a slow unordered endpoint, up to
its limit, and none once halted."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outbound.claims import Claimed
from outbound.lanes import Run, SlowEndpoints

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def _run(length: int, *, ordered: bool = False) -> list[Claimed]:
    return [
        Claimed(
            id=n,
            endpoint_id="ep-1",
            event_id=f"ev-{n}",
            webhook_id=f"msg_{n}",
            tenant_id="t-1",
            event_type="order.placed",
            body=b"{}",
            attempt=1,
            url="https://example.com/hook",
            lease_owner="d/1",
            lease_expires_at=T0,
            half_open=False,
            secret_tokens=(),
            healthy=True,
            ordered=ordered,
        )
        for n in range(length)
    ]


@settings(max_examples=50, deadline=None)
@given(length=st.integers(1, 60), lanes=st.integers(1, 8), stop_after=st.integers(0, 60))
def test_every_delivery_is_taken_once_or_given_back_once(
    length: int, lanes: int, stop_after: int
) -> None:
    run = Run(_run(length))
    taken: list[int] = []
    given_back: list[int] = []
    lock = threading.Lock()

    def lane() -> None:
        while (c := run.take()) is not None:
            with lock:
                if len(taken) >= stop_after:  # a lane halts the run: the rest goes back
                    run.halt.set()
                    given_back.extend([c.id, *(r.id for r in run.rest())])
                    return
                taken.append(c.id)

    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(taken + given_back) == list(range(length))
    assert run.left() == 0


def test_only_a_slow_unordered_run_wants_more_lanes_up_to_the_limit() -> None:
    run = Run(_run(8))
    run.open_lane()
    assert not run.wants_lane(4)  # not known to be slow
    assert not run.answered_in(0.05, lane_after_s=0.2)
    assert run.answered_in(0.3, lane_after_s=0.2)  # slow now: the loop is woken once
    assert not run.answered_in(0.3, lane_after_s=0.2)
    assert run.wants_lane(4)
    for _ in range(3):
        run.open_lane()
    assert not run.wants_lane(4)  # four lanes: the limit
    assert run.wants_lane(5)
    run.halt.set()
    assert not run.wants_lane(5)  # halted: no more lanes


def test_an_ordered_run_never_wants_a_second_lane_and_an_empty_one_none() -> None:
    ordered = Run(_run(8, ordered=True))
    ordered.open_lane()
    assert not ordered.answered_in(5.0, lane_after_s=0.2)
    assert not ordered.wants_lane(4)
    drained = Run(_run(2))
    drained.answered_in(1.0, lane_after_s=0.2)
    assert [c.id for c in drained.rest()] == [0, 1]
    assert not drained.wants_lane(4)
    with pytest.raises(ValueError, match="at least one"):
        Run([])


def test_a_run_of_an_endpoint_known_slow_wants_its_lanes_from_the_start() -> None:
    run = Run(_run(8), slow=True)
    run.open_lane()
    assert run.wants_lane(4)
    ordered = Run(_run(8, ordered=True), slow=True)
    ordered.open_lane()
    assert not ordered.wants_lane(4)  # an ordered endpoint: one lane, slow or not


def test_slow_endpoints_are_remembered_for_a_while_and_forgotten_at_a_quick_answer() -> None:
    now = [100.0]
    slow = SlowEndpoints(memory_s=60, monotonic=lambda: now[0])
    assert not slow.is_slow("ep-1")
    slow.answered("ep-1", 0.1, lane_after_s=0.2)
    assert not slow.is_slow("ep-1")
    slow.answered("ep-1", 0.5, lane_after_s=0.2)
    assert slow.is_slow("ep-1")
    now[0] += 59
    assert slow.is_slow("ep-1")
    now[0] += 2
    assert not slow.is_slow("ep-1")  # the memory ran out
    slow.answered("ep-1", 0.5, lane_after_s=0.2)
    slow.answered("ep-1", 0.01, lane_after_s=0.2)
    assert not slow.is_slow("ep-1")  # a quick answer forgets it


def test_slow_endpoints_memory_stays_bounded() -> None:
    now = [0.0]
    slow = SlowEndpoints(memory_s=1, monotonic=lambda: now[0])
    for n in range(10_000):
        slow.answered(f"ep-{n}", 1.0, lane_after_s=0.2)
    now[0] = 5.0  # all expired
    slow.answered("ep-new", 1.0, lane_after_s=0.2)
    assert len(slow._until) == 1
    assert slow.is_slow("ep-new")
