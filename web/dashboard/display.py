"""How the dashboard's templates show values: user data with its invisible characters made
visible, and times relative to now with the absolute UTC time on hover.

`visible` is the templates' `finalize` hook (web.dashboard.render), so every `{{ value }}`
goes through it before autoescaping: a bidirectional override (U+202A-202E, U+2066-2069),
a zero-width or other format character (Unicode category Cf), a control character (Cc,
but for newline and tab), a line or paragraph separator (Zl, Zp), a lone surrogate (Cs) or
a private-use character (Co) is written as the text `\\u202e` (or `\\U000e0001`), which
reads the same in an element, an attribute or a URL. No such character reaches the HTML.

`exact` is for a form field that must send a value back as it is (a parked key to
release): each such character becomes a numeric character reference (`&#x202e;`), which
the browser decodes into the field's value, while the HTML text still holds none.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

__all__ = ["Exact", "exact", "hidden", "relative", "time_tag", "visible"]

_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_KEPT = frozenset("\n\t")


def hidden(char: str) -> bool:
    """A character that shows nothing, moves other text, or breaks a line unseen."""
    return char not in _KEPT and unicodedata.category(char) in _HIDDEN_CATEGORIES


def _escape_char(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _visible_text(text: str) -> str:
    if text.isprintable():  # the fast path: no Cc, Cf, Cs, Co, Zl, Zp (nor Cn, Zs)
        return text
    return "".join(_escape_char(c) if hidden(c) else c for c in text)


class Exact(Markup):
    """Already escaped for a form field's value; `visible` leaves it alone."""

    __slots__ = ()


def visible(value: Any) -> Any:
    """The templates' finalize: invisible characters written as `\\uXXXX` escapes."""
    if isinstance(value, Exact):
        return value
    if isinstance(value, Markup):
        # Escaped HTML already (a macro's output): replacing a character by ASCII text
        # keeps it escaped.
        return Markup(_visible_text(str(value)))  # noqa: S704 - escaped already
    if isinstance(value, str):
        return _visible_text(value)
    return value


def exact(value: Any) -> Exact:
    """A value for a form field, sent back unchanged: hidden characters as references."""
    text = str(escape("" if value is None else value))
    return Exact("".join(f"&#x{ord(c):x};" if hidden(c) else c for c in text))


def relative(moment: datetime, now: datetime) -> str:
    """`3 min ago`, `in 42 s`, `just now`."""
    seconds = (now - moment).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        return "just now"
    if seconds < 120:
        span = f"{seconds:.0f} s"
    elif seconds < 7200:
        span = f"{seconds / 60:.0f} min"
    elif seconds < 172_800:
        span = f"{seconds / 3600:.1f} h"
    else:
        span = f"{seconds / 86400:.1f} d"
    return f"in {span}" if ahead else f"{span} ago"


def time_tag(moment: datetime | None, now: datetime) -> Markup:
    """`<time>` with the relative time as text and the absolute UTC time on hover."""
    if moment is None:
        return Markup("—")
    at = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    absolute = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        at.isoformat(), absolute, relative(at, now)
    )
