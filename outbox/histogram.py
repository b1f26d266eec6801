"""Fixed log-bucket histograms of durations: mergeable by adding counts, so a percentile
over any span of rollups (outbox.rollups) is read from the summed buckets.

Bucket 0 holds durations below 0.1 ms; bucket i (1..28) those in
[0.1 ms * 10 ** ((i - 1) / 4), 0.1 ms * 10 ** (i / 4)): four per decade, each 1.78 times the
one before; bucket 29 everything from 1,000 s on. A percentile is the geometric middle of the
bucket holding the true one, so it is within a factor 10 ** (1 / 8) (1.33) of it.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence

from outbox.schema_rollups import BUCKETS

__all__ = ["EDGES_MS", "bucket_of", "bucket_range", "merge", "percentile"]

EDGES_MS: tuple[float, ...] = tuple(0.1 * 10 ** (k / 4) for k in range(BUCKETS - 1))


def bucket_of(ms: float) -> int:
    """The bucket a duration in milliseconds falls in (negative ones count as zero)."""
    return bisect_right(EDGES_MS, ms) if ms > 0 else 0


def bucket_range(i: int) -> tuple[float, float]:
    """[low, high) of bucket i in milliseconds (the last one's high is infinity)."""
    low = 0.0 if i == 0 else EDGES_MS[i - 1]
    high = math.inf if i == BUCKETS - 1 else EDGES_MS[i]
    return low, high


def _middle(i: int) -> float:
    low, high = bucket_range(i)
    if i == 0:
        return EDGES_MS[0] / 2
    if math.isinf(high):
        return low
    return math.sqrt(low * high)


def merge(histograms: Iterable[Sequence[int]]) -> list[int]:
    """The bucket-wise sum."""
    total = [0] * BUCKETS
    for h in histograms:
        for i, n in enumerate(h):
            total[i] += n
    return total


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1, nearest rank) in milliseconds; None without samples."""
    n = sum(counts)
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return _middle(i)
    return _middle(BUCKETS - 1)  # pragma: no cover - seen reaches n
