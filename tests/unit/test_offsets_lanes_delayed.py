"""The worker's bookkeeping, without a broker: offsets, delayed retries, lanes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from consumers._internal.held_retries import DelayedRetries
from consumers._internal.lanes import Lanes
from consumers._internal.offsets import OffsetTracker, moved_at_of
from consumers.memory import MemoryRecord

TP = ("orders", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_committable_offset_stays_below_a_held_retry_until_it_is_released() -> None:
    offsets = OffsetTracker(Clock())
    offsets.advance(TP, 5)
    offsets.hold(TP, 2)
    assert offsets.committable(TP) == 2
    offsets.advance(TP, 9)
    assert offsets.committable(TP) == 2
    offsets.release(TP, 2)
    assert offsets.committable(TP) == 9
    assert offsets.committable(("orders", 1)) is None


def test_a_commit_carries_when_the_offset_last_moved_and_keeps_it_when_it_did_not() -> None:
    clock = Clock()
    offsets = OffsetTracker(clock)
    offsets.advance(TP, 3)
    first = offsets.due()
    assert first[TP][0] == 3 and moved_at_of(first[TP][1]) == 1000.0
    offsets.sent(first)
    clock.now = 1060.0
    assert offsets.due() == {}  # nothing moved: nothing to send between batches
    final = offsets.due(everything=True)  # the commit at stop sends all, keeping the time
    assert final[TP][0] == 3 and moved_at_of(final[TP][1]) == 1000.0
    offsets.advance(TP, 4)
    assert moved_at_of(offsets.due()[TP][1]) == 1060.0


def test_a_rejected_commit_is_sent_again_and_a_revoked_partition_is_forgotten() -> None:
    offsets = OffsetTracker(Clock())
    offsets.advance(TP, 7)
    due = offsets.due()
    offsets.sent(due)
    offsets.rejected({TP: 7})
    assert offsets.due()[TP][0] == 7
    offsets.hold(TP, 6)
    offsets.forget([TP])
    assert offsets.committable(TP) is None and offsets.held_count() == 0


def test_commit_metadata_that_is_not_ours_reads_as_unknown() -> None:
    assert moved_at_of("") is None
    assert moved_at_of("not json") is None
    assert moved_at_of(json.dumps({"moved_at": "soon"})) is None
    assert moved_at_of(json.dumps([1])) is None
    assert moved_at_of(json.dumps({"moved_at": 12.5})) == 12.5


@dataclass
class Held:
    name: str
    tp: tuple[str, int] = TP


def test_delayed_retries_come_out_earliest_first_and_in_arrival_order_on_ties() -> None:
    delayed: DelayedRetries[Held] = DelayedRetries()
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    delayed.push(t0 + timedelta(seconds=120), Held("slow"))
    delayed.push(t0 + timedelta(seconds=1), Held("quick-a"))
    delayed.push(t0 + timedelta(seconds=1), Held("quick-b"))
    delayed.push(t0 + timedelta(seconds=1), Held("other", ("orders", 1)))
    assert delayed.next_due() == t0 + timedelta(seconds=1)
    assert delayed.pop_due(t0, 10) == []
    delayed.drop([("orders", 1)])
    due = delayed.pop_due(t0 + timedelta(seconds=5), 10)
    assert [h.name for h in due] == ["quick-a", "quick-b"]
    assert len(delayed) == 1


def record(topic: str, partition: int, offset: int) -> MemoryRecord:
    return MemoryRecord(topic, partition, offset, b"k", b"{}", [])


def lanes() -> Lanes:
    return Lanes(lambda t: t == "high", retry_topic="g.retry", max_records=3)


ASSIGNED = {("high", 0), ("low", 0), ("g.retry", 0)}


def test_the_first_poll_after_an_assignment_cannot_say_the_high_lane_is_empty() -> None:
    lane = lanes()
    # The poll that joins the group runs before anything could be paused.
    assert lane.wanted_paused(set(), retries_full=False) == set()
    assert lane.select([record("low", 0, 0)], ASSIGNED) == []  # parked, not handled
    assert lane.parked and lane.high_first
    # The next poll runs with the other lanes paused and returns nothing: now it is known.
    assert lane.wanted_paused(ASSIGNED, retries_full=False) == {("low", 0), ("g.retry", 0)}
    assert lane.timeout_ms(500) == 200
    assert [r.offset for r in lane.select([], ASSIGNED)] == [0]
    assert not lane.high_first


def test_high_lane_records_go_first_and_the_others_wait_in_order() -> None:
    lane = lanes()
    lane.wanted_paused(ASSIGNED, retries_full=False)
    polled = [record("low", 0, 0), record("high", 0, 0), record("low", 0, 1)]
    assert [(r.topic, r.offset) for r in lane.select(polled, ASSIGNED)] == [("high", 0)]
    lane.wanted_paused(ASSIGNED, retries_full=False)
    handed = lane.select([record("low", 0, 2)], ASSIGNED)
    assert [(r.topic, r.offset) for r in handed] == [("low", 0), ("low", 1), ("low", 2)]
    lane.put_back(handed[1:])  # a batch cut short: the rest goes first next time
    assert lane.timeout_ms(500) == 0
    assert [r.offset for r in lane.select([], ASSIGNED)] == [1, 2]


def test_too_many_held_retries_pause_the_retry_partitions() -> None:
    lane = lanes()
    lane.high_first = False
    assert lane.wanted_paused(ASSIGNED, retries_full=True) == {("g.retry", 0)}
    lane.revoked({("low", 0)})
    assert lane.parked == []
