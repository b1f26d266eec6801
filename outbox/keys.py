"""What an id or key may be: the one rule for aggregate ids (the outbox key), parked keys and
the keys the tooling is asked about.

Text that looks the same must be the same id, and an id must survive every backend and
every hop (Kafka keys, headers, URLs, terminals) unchanged. So an id is refused when it
is empty or too long, starts or ends with a space, holds a control or NUL character, a
zero-width or other invisible formatting character, a line or paragraph separator, any
whitespace but a plain space, a private-use, surrogate or unassigned code point, or is not
in Unicode NFC form (`café` typed two ways would be two ids that look alike).
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_KEY_LENGTH", "key_problem"]

# outbox.key and parked_keys.key are VARCHAR(255).
MAX_KEY_LENGTH = 255
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def key_problem(text: str, *, max_length: int = MAX_KEY_LENGTH) -> str | None:
    """Why `text` cannot be an id, or None when it can."""
    if not text:
        return "is empty"
    if len(text) > max_length:
        return f"is {len(text)} characters long; at most {max_length}"
    if text[0].isspace() or text[-1].isspace():
        return "starts or ends with a space"
    for ch in text:
        if ch == " ":
            continue
        if unicodedata.category(ch) in _INVISIBLE or ch.isspace():
            return f"contains {_describe(ch)}, a control, invisible or space character"
    if not unicodedata.is_normalized("NFC", text):
        return "is not in Unicode NFC form (compose accents: é, not e + U+0301)"
    return None
