"""How the dispatcher deals claimed runs to threads (outbound.dispatcher.lanes): an ordered
endpoint's run on one lane in its order, an unordered one's on up to `endpoint_concurrency`
lanes while threads are free, every delivery in exactly one lane."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from outbound.claims import Claimed
from outbound.dispatcher import lanes

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def _run(endpoint: int, length: int, *, ordered: bool, start: int) -> list[Claimed]:
    return [
        Claimed(
            id=start + n,
            endpoint_id=f"ep-{endpoint}",
            event_id=f"ev-{start + n}",
            webhook_id=f"msg_{start + n}",
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


RUNS = st.lists(st.tuples(st.booleans(), st.integers(1, 20)), min_size=1, max_size=12)


@given(shape=RUNS, threads=st.integers(1, 40), endpoint_concurrency=st.integers(1, 8))
def test_every_delivery_is_in_one_lane_and_the_rules_of_each_run_hold(
    shape: list[tuple[bool, int]], threads: int, endpoint_concurrency: int
) -> None:
    runs, start = [], 0
    for i, (ordered, length) in enumerate(shape):
        runs.append(_run(i, length, ordered=ordered, start=start))
        start += length
    dealt = lanes(runs, threads, endpoint_concurrency)
    assert sorted(c.id for lane in dealt for c in lane.run) == list(range(start))
    # One lane per run at least; lanes beyond that only from threads left free.
    assert len(dealt) <= max(threads, len(runs))
    for run in runs:
        mine = [lane for lane in dealt if lane.run[0].endpoint_id == run[0].endpoint_id]
        assert 1 <= len(mine) <= endpoint_concurrency
        assert len({id(lane.halt) for lane in mine}) == 1  # one halt per run
        for lane in mine:
            assert [c.id for c in lane.run] == sorted(c.id for c in lane.run)  # oldest first
        if run[0].ordered:
            assert [lane.run for lane in mine] == [run]
    assert len({id(lane.halt) for lane in dealt}) == len(runs)


def test_an_unordered_backlog_takes_the_free_threads_up_to_the_endpoint_limit() -> None:
    slow = _run(0, 16, ordered=False, start=0)
    dealt = lanes([slow], threads=32, endpoint_concurrency=4)
    assert [[c.id for c in lane.run] for lane in dealt] == [list(range(i, 16, 4)) for i in range(4)]
    # Two threads free: two lanes; none free beyond the run's own: one.
    assert len(lanes([slow], threads=2, endpoint_concurrency=4)) == 2
    assert len(lanes([slow], threads=1, endpoint_concurrency=4)) == 1
    ordered = _run(1, 16, ordered=True, start=16)
    assert len(lanes([ordered, slow], threads=32, endpoint_concurrency=4)) == 5
