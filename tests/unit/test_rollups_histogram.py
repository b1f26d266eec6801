"""The rollups' histogram maths: a percentile read from summed buckets lies in the bucket of
the true percentile, and merging is associative and order-free."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from outbox.histogram import EDGES_MS, bucket_of, bucket_range, merge, percentile
from outbox.rollups import Rollups, Sample
from outbox.schema_rollups import BUCKETS

durations = st.floats(min_value=0.0, max_value=5e6, allow_nan=False, allow_infinity=False)
samples = st.lists(durations, min_size=1, max_size=300)
histograms = st.lists(st.integers(min_value=0, max_value=10_000), min_size=BUCKETS,
                      max_size=BUCKETS)  # fmt: skip
quantiles = st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0])


def histogram(values: list[float]) -> list[int]:
    counts = [0] * BUCKETS
    for v in values:
        counts[bucket_of(v)] += 1
    return counts


def test_edges_span_a_tenth_of_a_millisecond_to_beyond_ten_minutes() -> None:
    assert EDGES_MS[0] == 0.1
    assert EDGES_MS[-1] >= 10 * 60 * 1000
    assert bucket_of(0.05) == 0
    assert bucket_of(0.1) == 1
    assert bucket_of(11 * 60 * 1000) == BUCKETS - 2
    assert bucket_of(2e6) == BUCKETS - 1
    assert bucket_of(-3.0) == 0


@given(durations)
def test_a_duration_lies_in_its_bucket(ms: float) -> None:
    low, high = bucket_range(bucket_of(ms))
    assert low <= ms < high


@given(st.lists(samples, min_size=1, max_size=5), quantiles)
def test_percentile_of_merged_buckets_is_within_the_true_ones_bucket(
    parts: list[list[float]], q: float
) -> None:
    # Given samples recorded by several processes and minutes, each its own histogram,
    merged = merge(histogram(part) for part in parts)
    everything = sorted(v for part in parts for v in part)
    # the nearest-rank percentile of all the samples
    true = everything[max(1, math.ceil(q * len(everything))) - 1]
    estimate = percentile(merged, q)
    assert estimate is not None
    # lies in the same bucket as the estimate, so within one bucket's resolution of it.
    assert bucket_of(estimate) == bucket_of(true)
    low, high = bucket_range(bucket_of(true))
    if low > 0 and not math.isinf(high):
        assert estimate / true <= high / low
        assert true / estimate <= high / low


@given(histograms, histograms, histograms)
def test_merge_is_associative_and_commutative(a: list[int], b: list[int], c: list[int]) -> None:
    assert merge([merge([a, b]), c]) == merge([a, merge([b, c])])
    assert merge([a, b]) == merge([b, a])
    assert sum(merge([a, b, c])) == sum(a) + sum(b) + sum(c)


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([0] * BUCKETS, 0.5) is None


@given(samples)
def test_the_aggregator_counts_what_it_is_given(values: list[float]) -> None:
    # Given a clock stuck inside one minute, every sample lands in one cell
    rollups = Rollups(clock=lambda: 120.5)
    for v in values:
        rollups.job("g", "j", Sample(handled=1, run_ms=v, wait_ms=v))
    cells = rollups.take()
    ((key, cell),) = cells.items()
    assert key == (120, "job", "g", "j")
    assert cell[1] == len(values)
    assert cell[6 : 6 + BUCKETS] == histogram(values)  # wait histogram
    assert cell[6 + BUCKETS :] == histogram(values)  # run histogram
    assert rollups.take() == {}


def test_memory_is_bounded_and_a_failed_write_is_given_back() -> None:
    now = [0.0]
    rollups = Rollups(clock=lambda: now[0], max_cells=2)
    for minute in range(4):
        now[0] = minute * 60.0
        rollups.job("g", "j", Sample(handled=1))
    assert rollups.pending() == 2
    assert rollups.dropped == 2
    taken = rollups.take()
    rollups.job("g", "j", Sample(handled=1))  # minute 3, after the take
    rollups.give_back(taken)
    assert rollups.pending() == 2  # minute 3 and one of the two given back fit
    assert rollups.dropped == 3
