"""How the dashboard shows values, without a database: no hidden character (bidirectional
override, zero-width, control, separator, surrogate, private use) ever reaches the HTML
from user data, through any template expression; relative times; a done job's duration
from its successful run; the attempts history a forged header cannot break."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import Environment
from markupsafe import Markup, escape

from consumers.attempt_history import MAX_KEPT, entry, read_attempts, with_attempt
from web.dashboard import render
from web.dashboard.display import exact, hidden, relative, time_tag, visible
from web.dashboard.reads import with_durations

HIDDEN = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
HIDDEN += ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\ufeff", "\x00", "\x1b", "\r"]
HIDDEN += ["\x85", "\u2028", "\u2029", "\u00ad", "\U000e0001", "\ue000", "\ud800"]

hostile = st.text(
    alphabet=st.one_of(st.sampled_from(HIDDEN), st.characters(codec=None)), max_size=60
)


def _leaks(html: str) -> list[str]:
    return [c for c in html if c not in "\n\t" and hidden(c)]


def test_every_listed_character_counts_as_hidden() -> None:
    assert all(hidden(c) for c in HIDDEN)
    assert not any(hidden(c) for c in "a é\n\t<>&\"'中\u00a0")


@settings(max_examples=300, deadline=None)
@given(value=hostile)
def test_no_hidden_character_reaches_html_through_any_expression(value: str) -> None:
    """Text, an attribute, a macro's output, a form field's exact value: never the raw
    character; text stays escaped (autoescape still on)."""
    env: Environment = render.templates.env
    page = env.from_string(
        "{% macro m(v) %}<b>{{ v }}</b>{% endmacro %}"
        '<p title="{{ v }}">{{ v }}</p>{{ m(v) }}<input value="{{ v|exact }}">'
        "{{ v|upper }}{{ [v, v]|join(',') }}{{ {'k': v}|tojson }}{{ u|urlencode }}"
    ).render(v=value, u=value.encode("utf-8", "replace").decode())
    # (urlencode needs UTF-8: a lone surrogate cannot come from the databases, which refuse
    # them; the runtime escapes them before it writes.)
    assert _leaks(page) == []
    shown = escape(visible(value))
    assert page.startswith(f'<p title="{shown}">{shown}</p><b>{shown}</b>')


@given(value=hostile)
def test_visible_text_is_reversible_enough_to_read(value: str) -> None:
    shown = visible(value)
    assert _leaks(shown) == []
    for char in set(value):
        if hidden(char):
            code = ord(char)
            assert (f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}") in shown
        else:
            assert char in shown


def test_the_spoofed_image_name_is_shown_as_written() -> None:
    html = render.templates.env.from_string("<td>{{ v }}</td>").render(
        v="invoice\u202egpj.exe.png <x>"
    )
    assert html == "<td>invoice\\u202egpj.exe.png &lt;x&gt;</td>"


def test_markup_is_left_escaped_and_exact_values_are_references() -> None:
    assert visible(Markup("<i>a\u202eb</i>")) == Markup("<i>a\\u202eb</i>")
    assert str(exact('k"\u202e<')) == "k&#34;&#x202e;&lt;"
    assert visible(exact("a\u200bb")) == exact("a\u200bb")  # finalize leaves it alone
    assert visible(42) == 42 and visible(None) is None


def test_relative_times_and_the_absolute_time_on_hover() -> None:
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert relative(now - timedelta(minutes=3), now) == "3 min ago"
    assert relative(now + timedelta(seconds=42), now) == "in 42 s"
    assert relative(now, now) == "just now"
    assert relative(now - timedelta(days=3), now) == "3.0 d ago"
    tag = str(time_tag(now - timedelta(hours=5), now))
    assert tag == (
        '<time datetime="2026-12-06T22:00:00+00:00" title="2026-12-06 22:00:00 UTC">'
        "5.0 h ago</time>"
    )
    assert str(time_tag(None, now)) == "—"


def _worker(*recent: dict[str, Any]) -> dict[str, Any]:
    return {"recent": list(recent)}


def test_a_done_job_shows_its_successful_runs_duration_not_a_failed_attempts() -> None:
    """The finding: a job's duration showed a failed attempt's 0.2 ms instead of the
    run's 31 ms. Workers remember every attempt; the failed one may come last (another
    worker's list, or a redelivery)."""
    ok = {"job": "j", "event_id": "e", "outcome": "processed", "attempt": 2, "duration_ms": 31.0}
    failed = {"job": "j", "event_id": "e", "outcome": "retry_scheduled", "attempt": 1,
              "duration_ms": 0.2}  # fmt: skip
    done = {"job_name": "j", "message_id": "e", "status": "done"}
    for workers in ([_worker(ok), _worker(failed)], [_worker(ok, failed)], [_worker(failed, ok)]):
        (row,) = with_durations([done], workers)
        assert row["duration_ms"] == 31.0
    retrying = {"job_name": "j", "message_id": "e", "status": "retrying"}
    (row,) = with_durations([retrying], [_worker(failed)])
    assert row["duration_ms"] == 0.2
    (row,) = with_durations([done], [_worker(failed)])
    assert row["duration_ms"] is None  # no success remembered: no duration, not a wrong one


def test_attempts_accumulate_and_are_bounded() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    header = ""
    for n in range(1, MAX_KEPT + 6):
        header = with_attempt({"x-attempts": header}, entry(n, now, 0.01, ValueError(), "x"))
    found = read_attempts({"x-attempts": header})
    assert [e["n"] for e in found] == list(range(6, MAX_KEPT + 6))
    assert found[-1] == {"n": MAX_KEPT + 5, "at": now, "ms": 10.0, "error": "ValueError: x"}


@settings(max_examples=200, deadline=None)
@given(
    forged=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=20,
    )
)
def test_a_forged_attempts_header_never_breaks_the_history(forged: Any) -> None:
    for header in (json.dumps(forged), forged):
        found = read_attempts({"x-attempts": header})
        for e in found:
            assert 1 <= e["n"] <= 1000 and e["ms"] >= 0 and e["at"].tzinfo is not None
            assert _leaks(e["error"]) == [] and len(e["error"]) <= 300
        again = with_attempt({"x-attempts": header}, entry(1, datetime.now(UTC), 0, None, ""))
        assert read_attempts({"x-attempts": again})[-1]["n"] == 1


def test_the_templates_finalize_is_visible() -> None:
    assert render.templates.env.finalize is visible
    assert unicodedata.category("\u202e") == "Cf"
