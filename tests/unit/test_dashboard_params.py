"""The dashboard's parsers of query and form values, fed anything: a value or a BadRequest
that says what to type, never another exception (an OverflowError was a 500)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import FormData

from web.dashboard.params import (
    MAX_MOMENT,
    MIN_MOMENT,
    id_list,
    id_param,
    inbox_cursor,
    key_param,
    moment_param,
    since_param,
    text_param,
)
from web.errors import BadRequest

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
# Text that looks like what the parsers expect, and anything at all.
ISO_ISH = st.from_regex(
    r"\A[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?([+-][0-9]{2}:[0-9]{2}|Z)?)?\Z"
)
HOSTILE = st.one_of(st.text(max_size=60), ISO_ISH, st.from_regex(r"\A[0-9]{1,7}[mhdsy]\Z"))


def _value_or_400(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except BadRequest as exc:
        message = str(exc)
    assert ": " in message or " " in message  # says what to type
    return None


@given(HOSTILE)
def test_since_is_a_utc_moment_in_range_or_a_400(text: str) -> None:
    found = _value_or_400(since_param, text, NOW)
    if found is not None:
        assert found.tzinfo is not None and found.utcoffset().total_seconds() == 0
        assert MIN_MOMENT <= found <= MAX_MOMENT


@given(HOSTILE)
def test_a_moment_is_utc_in_range_or_a_400(text: str) -> None:
    found = _value_or_400(moment_param, text, "before")
    if found is not None:
        assert MIN_MOMENT <= found <= MAX_MOMENT and found.tzinfo is UTC


@given(st.one_of(st.text(max_size=120), st.tuples(ISO_ISH, st.text(max_size=90)).map("|".join)))
def test_an_inbox_cursor_is_a_moment_and_an_id_or_a_400(text: str) -> None:
    found = _value_or_400(inbox_cursor, text)
    if found is not None:
        at, message_id = found
        assert MIN_MOMENT <= at <= MAX_MOMENT and 0 < len(message_id) <= 80


@given(st.text(max_size=300))
def test_a_key_is_kept_exactly_or_refused(text: str) -> None:
    found = _value_or_400(key_param, text)
    if found is not None:
        assert found == text and found == found.strip() and "\x00" not in found


@given(st.text(max_size=30))
def test_row_ids_fit_a_bigint_or_are_a_400(text: str) -> None:
    found = _value_or_400(id_param, text, "before")
    if found is not None:
        assert 0 <= found < 2**63
    ids = _value_or_400(id_list, FormData([("ids", text)]), "ids", 10)
    if ids:
        assert 0 <= ids[0] < 2**63


@given(st.text(max_size=400))
def test_a_text_filter_is_printable_and_bounded_or_a_400(text: str) -> None:
    found = _value_or_400(text_param, text, "search")
    if found is not None:
        assert len(found) <= 255 and found == found.strip()
        assert not any(ord(c) < 32 or ord(c) == 127 for c in found)


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01", "0999-12-31"],
)
def test_the_moments_past_the_ends_of_time_are_a_400(text: str) -> None:
    with pytest.raises(BadRequest, match="between the years 1000 and 9999"):
        since_param(text, NOW)


def test_relative_times_and_offsets_are_read() -> None:
    assert since_param("24h", NOW) == datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    assert since_param("99999d", NOW) == NOW - timedelta(days=99999)
    assert moment_param("2026-12-07T05:00:00+02:00", "x") == datetime(2026, 12, 7, 3, tzinfo=UTC)
    assert moment_param("2026-12-07", "x") == datetime(2026, 12, 7, tzinfo=UTC)


@pytest.mark.parametrize("key", [" ord-1", "ord-1 ", "ord\x001", "ord\u202e1", ""])
def test_a_key_the_id_rule_refuses_is_a_400(key: str) -> None:
    with pytest.raises(BadRequest):
        key_param(key)
