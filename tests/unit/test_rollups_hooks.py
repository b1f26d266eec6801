"""Where the rollups are counted: the relay's batch accounting (per topic; a fenced batch
adds no published rows) and the worker's wait origin read from hostile headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consumers.middleware.metrics import wait_origin
from outbox.rollups import Rollups
from relay import store
from relay.accounting import Batch, RelayStats, account
from relay.metrics import RelayMetrics

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _row(row_id: int, topic: str) -> store.Claimed:
    return store.Claimed(row_id, f"ev-{row_id}", topic, "k", 0, "t", "{}", "{}", T0, T0, 0)


def _batch(marked: int) -> Batch:
    rows = [_row(1, "orders"), _row(2, "orders"), _row(3, "products"), _row(4, "products")]
    acks = [store.Ack(1, 0, 1, 0, 10), store.Ack(3, 0, 1, 0, 11)]
    return Batch(
        rows=rows,
        acks=acks,
        marked=marked,
        killed=1,
        deferred=1,
        dead=[store.Failure(2, 1, "too large")],
        retry=[store.Failure(4, 1, "timed out")],
        latencies=[0.005, 2.0],
        started=0.0,
    )


def _cells(rollups: Rollups) -> dict[str, tuple[int, int, int, int]]:
    return {key[2]: tuple(cell[:4]) for key, cell in rollups.take().items()}  # type: ignore[misc]


def test_the_relay_counts_published_dead_and_deferred_rows_per_topic() -> None:
    rollups = Rollups(clock=lambda: 60.0)
    account(RelayStats(), RelayMetrics(rollups=rollups), _batch(marked=2))
    # (published, handled, failed, retried) per topic
    assert _cells(rollups) == {"orders": (1, 0, 1, 0), "products": (1, 0, 0, 1)}


def test_a_fenced_batch_adds_no_published_rows() -> None:
    rollups = Rollups(clock=lambda: 60.0)
    account(RelayStats(), RelayMetrics(rollups=rollups), _batch(marked=1))
    assert _cells(rollups) == {"orders": (0, 0, 1, 0), "products": (0, 0, 0, 1)}


def test_without_rollups_the_relay_records_none() -> None:
    stats = RelayStats()
    account(stats, RelayMetrics(), _batch(marked=2))
    assert stats.published == 2


def test_the_wait_starts_at_the_latest_of_commit_copy_and_not_before() -> None:
    commit = T0.isoformat()
    copied = (T0 + timedelta(seconds=30)).isoformat()
    assert wait_origin({"ce_time": commit}, None) == T0.timestamp()
    assert wait_origin({"ce_time": commit, "x-copied-at": copied}, None) == T0.timestamp() + 30
    later = T0 + timedelta(minutes=5)
    assert wait_origin({"ce_time": commit}, later) == later.timestamp()
    assert wait_origin({}, later) is None  # nothing says when it was committed
    assert wait_origin({"ce_time": "2026-12-07T12:00:00"}, None) is None  # no zone: unknown


@given(st.dictionaries(st.sampled_from(["ce_time", "x-copied-at", "other"]), st.text()))
def test_hostile_headers_never_break_the_wait(headers: dict[str, str]) -> None:
    found = wait_origin(headers, None)
    assert found is None or isinstance(found, float)
