"""KafkaSource and an empty assignment while its topics have partitions (docs/measured.md:
kafka-python's leader can assign from metadata older than the topics and stay idle): the
leader asks for a rebalance after each wait of EMPTY_RECHECK_S, then takes the empty
assignment as meant; a member that is not the leader, a non-empty assignment or topics still
without partitions never make it ask. Fakes stand in for kafka-python's consumer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from consumers import kafka_source
from consumers.kafka_source import EMPTY_RECHECK_S, KafkaSource


@dataclass
class FakeCluster:
    partitions: dict[str, set[int]]

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic) or None


@dataclass
class FakeCoordinator:
    _is_leader: bool = True
    rejoins: int = 0

    def request_rejoin(self) -> None:
        self.rejoins += 1


@dataclass
class FakeClient:
    cluster: FakeCluster


@dataclass
class FakeConsumer:
    _client: FakeClient
    _coordinator: FakeCoordinator
    assigned: set[Any] = field(default_factory=set)

    def assignment(self) -> set[Any]:
        return self.assigned

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        return {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _source(
    monkeypatch: pytest.MonkeyPatch, *, leader: bool = True, partitions: set[int] | None = None
) -> tuple[KafkaSource, FakeConsumer, Clock]:
    clock = Clock()
    monkeypatch.setattr(kafka_source, "time", clock)
    consumer = FakeConsumer(
        FakeClient(FakeCluster({"t": {0, 1} if partitions is None else partitions})),
        FakeCoordinator(_is_leader=leader),
    )
    source = object.__new__(KafkaSource)  # no broker: the fields the checks read
    source._group, source._topics, source._consumer = "g", ("t",), consumer
    source._missing_check_at, source._empty_check_at, source._empty_rejoins = None, None, 0
    return source, consumer, clock


def _poll_after(source: KafkaSource, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    source.poll(timeout_ms=0, max_records=1)


def test_the_leader_asks_again_after_each_wait_then_takes_the_empty_assignment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, consumer, clock = _source(monkeypatch)
    for n, wait_s in enumerate(EMPTY_RECHECK_S, start=1):
        source._note_assignment()  # assigned nothing
        _poll_after(source, clock, wait_s - 0.5)
        assert consumer._coordinator.rejoins == n - 1  # not before its wait
        _poll_after(source, clock, 0.5)
        assert consumer._coordinator.rejoins == n
    source._note_assignment()  # still nothing after the last one: meant so
    _poll_after(source, clock, 10 * max(EMPTY_RECHECK_S))
    assert consumer._coordinator.rejoins == len(EMPTY_RECHECK_S)


def test_an_assignment_with_partitions_resets_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    source, consumer, clock = _source(monkeypatch)
    source._note_assignment()
    _poll_after(source, clock, EMPTY_RECHECK_S[0])
    assert consumer._coordinator.rejoins == 1
    consumer.assigned = {("t", 0)}
    source._note_assignment()
    _poll_after(source, clock, 10 * max(EMPTY_RECHECK_S))
    assert consumer._coordinator.rejoins == 1
    consumer.assigned = set()
    source._note_assignment()  # empty again later: the waits start over
    _poll_after(source, clock, EMPTY_RECHECK_S[0])
    assert consumer._coordinator.rejoins == 2


@pytest.mark.parametrize(
    ("leader", "partitions", "assigned_later"),
    [(False, None, False), (True, set(), False), (True, None, True)],
    ids=["not the leader", "topics without partitions", "assigned meanwhile"],
)
def test_no_rebalance_is_asked_for_when_it_would_not_help(
    monkeypatch: pytest.MonkeyPatch,
    leader: bool,
    partitions: set[int] | None,
    assigned_later: bool,
) -> None:
    source, consumer, clock = _source(monkeypatch, leader=leader, partitions=partitions)
    source._note_assignment()
    if assigned_later:
        consumer.assigned = {("t", 1)}
    _poll_after(source, clock, 10 * max(EMPTY_RECHECK_S))
    assert consumer._coordinator.rejoins == 0
