"""The relay's back-off: exponential with full jitter, capped, for any count of failures."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay import RelayConfig


@given(failures=st.integers(min_value=-5, max_value=10**6))
def test_the_backoff_stays_within_its_cap_however_many_failures(failures: int) -> None:
    config = RelayConfig(shards=4, backoff_base_s=0.01, backoff_max_s=5.0)
    delay = config.backoff(failures)
    assert 0.005 / 2 <= delay <= 5.0
    assert 0 < config.broker_backoff(failures) <= min(5.0, config.broker_backoff_max_s)


def test_a_key_failing_for_hours_still_waits_its_cap_not_an_overflow() -> None:
    # Seen in CI: a key failing ~1,100 times in a test with a tiny base overflowed a float.
    config = RelayConfig(shards=4, backoff_base_s=0.001, backoff_max_s=1.0)
    assert 0.5 <= config.backoff(1_100) <= 1.0
