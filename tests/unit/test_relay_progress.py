"""Leases follow progress: when a relay counts as stalled, and how long it stands aside."""

from __future__ import annotations

import time

import pytest

from outbox.types import utcnow
from relay.progress import COOL_DOWN_MAX_S, Progress


def test_no_progress_for_longer_than_the_stall_time_is_a_stall() -> None:
    progress = Progress(0.05, utcnow)
    assert progress.stalled_for() is None
    time.sleep(0.1)
    stalled = progress.stalled_for()
    assert stalled is not None and stalled > 0.05
    progress.made(published=False)  # nothing due counts as progress
    assert progress.stalled_for() is None
    assert progress.last_published_at is None
    progress.made(published=True)
    assert progress.last_published_at == progress.progress_at


def test_the_cool_down_doubles_while_the_relay_keeps_stalling_and_resets_on_a_publish() -> None:
    progress = Progress(60, utcnow)
    assert [progress.step_back() for _ in range(6)] == [60, 120, 240, 480, 600, 600]
    assert COOL_DOWN_MAX_S == 600
    assert progress.standing_by and not progress.cool_down_over()
    progress.made(published=True)
    assert progress.step_back() == 60


def test_a_stepped_back_relay_rejoins_after_its_cool_down_with_a_fresh_stall_clock() -> None:
    progress = Progress(0.05, utcnow)
    time.sleep(0.1)
    progress.step_back()
    assert not progress.cool_down_over()
    time.sleep(0.1)
    assert progress.cool_down_over()
    assert progress.standing_by  # until it has registered again
    progress.rejoined()
    assert not progress.standing_by
    assert progress.stalled_for() is None


def test_the_stall_time_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Progress(0, utcnow)
