"""outbound.http.parse_retry_after: seconds or an HTTP date, capped, never negative; None
for anything else, whatever the header says (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbound.http import parse_retry_after

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
CAP = 3600.0


@pytest.mark.parametrize(
    ("value", "wait"),
    [
        (None, None),
        ("0", 0.0),
        ("120", 120.0),
        (" 30 ", 30.0),
        ("86400", CAP),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(days=1), usegmt=True), 0.0),
        (format_datetime(NOW + timedelta(days=2), usegmt=True), CAP),
        ("Sun, 07 Dec 2026 12:01:00 -0000", 60.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are not delta-seconds
    ],
)
def test_retry_after_forms(value: str | None, wait: float | None) -> None:
    assert parse_retry_after(value, NOW, CAP) == wait


@given(st.text(max_size=64))
def test_any_header_text_gives_none_or_a_wait_within_the_cap(value: str) -> None:
    wait = parse_retry_after(value, NOW, CAP)
    assert wait is None or 0.0 <= wait <= CAP
