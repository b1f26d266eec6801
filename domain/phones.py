"""What a command may take as a customer's phone number: E.164, checked with `phonenumbers`.

A number must be given in international form ("+" and the country code: "+49 151 1234
5678", "+1 (415) 555-2671"); it is stored normalised to E.164 ("+4915112345678"). There is
no default region: a number without its country is refused, never guessed. A number the
library does not hold for valid (wrong length, an unassigned range) is refused too: an SMS
to it could only fail later, in a job, where nobody who typed it sees the error.

The error never quotes the number (personal data stays out of logs and failed jobs); it
says what is wrong and how to write it.
"""

from __future__ import annotations

from typing import Annotated, Any

import phonenumbers
from pydantic import BeforeValidator

__all__ = ["MAX_INPUT", "PhoneNumber", "check_phone", "is_e164", "mask_phone"]

# Longer than any written form of a number (E.164: at most 15 digits after the "+").
MAX_INPUT = 64


def check_phone(value: Any) -> Any:
    """The number in E.164, or ValueError saying what is wrong (never quoting it)."""
    if not isinstance(value, str):
        return value  # pydantic's str check says it
    text = value.strip()
    if len(text) > MAX_INPUT:
        raise ValueError(f"a phone number is written in at most {MAX_INPUT} characters")
    if not text.startswith("+"):
        raise ValueError(
            "a phone number must be in international form: '+', the country code, then the "
            "number (e.g. +44 20 7946 0958)"
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number: '+', the country code, then the number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(
            "not a valid phone number (wrong length or an unassigned range for its country)"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_e164(value: str | None) -> bool:
    """Whether a stored value is a number in E.164 (an erased one is a pseudonym, not)."""
    return value is not None and value[:1] == "+" and value[1:].isdigit() and 8 <= len(value) <= 16


def mask_phone(value: str | None) -> str:
    """`+4915112345678` -> `+***78`: enough to tell cases apart in logs, never the number."""
    if not value:
        return "-"
    tail = value[-2:] if value[-2:].isdigit() else "**"
    return f"+***{tail}"


# A customer's phone: E.164 after validation.
PhoneNumber = Annotated[str, BeforeValidator(check_phone)]
