"""bench/latency_hops.py finds each row's batch by the published_at its log line names.

With the relay's pipeline, a batch's `relay_batch_published` line can be written after the
next batch was acknowledged; matching a row to "the first line after its published_at"
then gave it the earlier batch's claim, before the row was even written (a CI run saw it).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bench.latency_hops import claim_times

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def _line(logged: datetime, duration_ms: float, published: datetime | None) -> str:
    entry = {
        "event": "relay_batch_published",
        "timestamp": logged.isoformat(),
        "duration_ms": duration_ms,
        "published_at": published.isoformat() if published else None,
    }
    return json.dumps(entry)


def test_a_batch_logged_after_the_next_one_was_acked_keeps_its_own_claim(tmp_path: Path) -> None:
    a_claimed, a_published = T0, T0 + timedelta(milliseconds=5)
    b_claimed, b_published = T0 + timedelta(milliseconds=3), T0 + timedelta(milliseconds=8)
    log = tmp_path / "relay.log"
    log.write_text(
        "\n".join(
            [
                # A's marks were written late: its line comes after B's ack.
                _line(T0 + timedelta(milliseconds=9), 9.0, a_published),
                _line(T0 + timedelta(milliseconds=10), 7.0, b_published),
                _line(T0 + timedelta(milliseconds=11), 1.0, None),  # a batch with no rows
                '{"event": "relay_batch_published", "timestamp": "not a time"}',
                "not json at all",
            ]
        )
    )

    found = claim_times(log, [a_published.timestamp(), b_published.timestamp()])

    assert found[a_published.timestamp()] == a_claimed.timestamp()
    assert abs(found[b_published.timestamp()] - b_claimed.timestamp()) < 1e-6


def test_a_row_whose_batch_logged_nothing_has_no_claim(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    log.write_text(_line(T0 + timedelta(milliseconds=9), 9.0, T0))

    assert claim_times(log, [(T0 + timedelta(microseconds=1)).timestamp()]) == {}
    assert claim_times(tmp_path / "absent.log", [T0.timestamp()]) == {}


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30, unique=True))
def test_every_batch_is_found_by_its_published_at_whatever_order_its_lines_are_in(
    offsets_us: list[int],
) -> None:
    published = [T0 + timedelta(microseconds=us) for us in offsets_us]
    # Lines in reverse order, each logged 50 ms after its ack, its claim 20 ms before it.
    lines = [_line(p + timedelta(milliseconds=50), 70.0, p) for p in reversed(published)]
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "relay.log"
        path.write_text("\n".join(lines))
        found = claim_times(path, [p.timestamp() for p in published])
    assert set(found) == {p.timestamp() for p in published}
    for p in published:
        assert abs(found[p.timestamp()] - (p - timedelta(milliseconds=20)).timestamp()) < 1e-5
