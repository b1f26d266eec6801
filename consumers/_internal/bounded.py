"""Text from a record, made safe to store: bounded, and with no character a database refuses.

Anything a record carries (key, headers, ids, payload, an exception's message) may be
hostile: NUL bytes (PostgreSQL text refuses them), control or zero-width characters, lone
surrogates, or far more than a column holds. A value the runtime relies on (an event id, a
key) is checked with `is_clean`; a value it only records goes through `escaped`, which
writes such characters as `\\uXXXX` and cuts the text to the column's length.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

__all__ = ["b64", "bounded_json", "escaped", "is_clean", "payload_text"]

# Controls (C0, DEL, C1), zero-width and bidi format characters, BOM, surrogates.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)


def is_clean(text: str, limit: int) -> bool:
    """1 to `limit` characters, none of them unsafe, no surrounding spaces."""
    return 0 < len(text) <= limit and text.strip() == text and not _UNSAFE.search(text)


def escaped(text: str, limit: int) -> str:
    """The text with unsafe characters written as \\uXXXX, at most `limit` characters."""
    safe = _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text[: limit * 6])
    if len(safe) <= limit:
        return safe
    return safe[: max(0, limit - 1)] + "…"


def b64(value: bytes | None) -> str:
    return base64.b64encode(value or b"").decode("ascii")


def payload_text(value: bytes | None) -> tuple[str, str]:
    """(text, encoding): the value as UTF-8 text, or base64 when it is not UTF-8 or holds
    a NUL (which PostgreSQL text cannot store)."""
    if value is None:
        return "", "utf-8"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return b64(value), "base64"
    if "\x00" in text:
        return b64(value), "base64"
    return text, "utf-8"


def bounded_json(value: dict[str, Any], limit: int) -> str:
    """JSON of a dict of strings (ASCII, so NUL and the rest are escaped), under `limit`
    characters: values are cut first, then entries dropped, and `_truncated` says so."""
    text = json.dumps(value, sort_keys=True)
    if len(text) <= limit:
        return text
    cut = {escaped(str(k), 100): escaped(str(v), 200) for k, v in value.items()}
    cut["_truncated"] = "true"
    while len(text := json.dumps(cut, sort_keys=True)) > limit and len(cut) > 1:
        cut.pop(next(k for k in sorted(cut) if k != "_truncated"))
    return text
