"""The domain's bounds, in one place: what an id may be and how large an amount may get.

Amounts and quantities are BIGINT columns (migration 0006); the bounds below keep every
sum the domain computes far inside 64 bits, so a command is refused with a clear message
long before a database could raise "integer out of range":

    an order total <= 100 lines x 10,000 units x 10^12 cents = 10^18 < 2^63 (9.2 x 10^18)
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from outbox.keys import key_problem

__all__ = [
    "MAX_AMOUNT_CENTS",
    "MAX_ORDER_LINES",
    "MAX_PROFILE_FIELDS",
    "MAX_PROFILE_VALUE",
    "MAX_QUANTITY",
    "MAX_RECIPIENTS",
    "MAX_STOCK",
    "RECIPIENTS_PER_EVENT",
    "Id",
    "check_id",
]

# Ten billion in currency units: more than any one price or payment we will see.
MAX_AMOUNT_CENTS = 10**12
# Units of a product in stock, and what one stock adjustment may move.
MAX_STOCK = 10**9
# Units of one product on one order line.
MAX_QUANTITY = 10_000
MAX_ORDER_LINES = 100
# A tenant profile: a few named texts (website, phone, address...), not a document store.
MAX_PROFILE_FIELDS = 50
MAX_PROFILE_KEY = 64
MAX_PROFILE_VALUE = 2_000
# A campaign's recipients travel in events of at most this many addresses (each <= 320
# characters: <= 165 KB), so a campaign of the largest size still emits small events.
RECIPIENTS_PER_EVENT = 500
MAX_RECIPIENTS = 100_000

ID_LENGTH = 64


def check_id(value: Any) -> Any:
    """Refuse an id that `outbox.keys` refuses (before any stripping: a space is refused)."""
    if isinstance(value, str):
        problem = key_problem(value, max_length=ID_LENGTH)
        if problem is not None:
            raise ValueError(f"an id {problem}")
    return value


# Aggregate ids and other identifiers in commands: 1-64 characters, no invisible ones.
Id = Annotated[str, BeforeValidator(check_id), Field(min_length=1, max_length=ID_LENGTH)]
