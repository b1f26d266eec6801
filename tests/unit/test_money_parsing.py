"""Money is read one way only: ISO 4217 codes from a real table with their minor units, and
gateway bodies whose amounts are JSON integers and whose objects never repeat a key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import registry
from domain.errors import InvalidCommand
from domain.money import MINOR_UNITS, describe_amount, is_known_currency
from domain.ordering import OrderLine, OrderPlaced, PlaceOrder
from web.errors import BadRequest, Unprocessable
from web.gateways import notice_for, parse_document
from web.signatures import Verified

STANDARD = Verified("standard-webhooks", datetime(2026, 12, 7, tzinfo=UTC), 0, webhook_id="m-1")
STRIPE = Verified("stripe", datetime(2026, 12, 7, tzinfo=UTC), 0)
PROPERTIES = settings(max_examples=150, deadline=None)


def test_the_currency_table_holds_iso_codes_with_their_minor_units() -> None:
    assert len(MINOR_UNITS) > 150
    assert all(len(c) == 3 and c.isascii() and c.isalpha() and c.isupper() for c in MINOR_UNITS)
    assert set(MINOR_UNITS.values()) == {0, 2, 3, 4}
    assert (MINOR_UNITS["JPY"], MINOR_UNITS["EUR"], MINOR_UNITS["KWD"], MINOR_UNITS["CLF"]) == (
        0,
        2,
        3,
        4,
    )
    for code in ("jpy", "", "XYZ", "XAU", " EUR", "EURO", None, 978):
        assert not is_known_currency(code)
    assert describe_amount(4900, "JPY") == "4900 JPY"
    assert describe_amount(4900, "EUR") == "49.00 EUR"
    assert describe_amount(4900, "KWD") == "4.900 KWD"


def test_an_order_is_placed_in_a_known_currency_or_the_default() -> None:
    lines = [OrderLine(product_id="p-1", quantity=1)]
    made = {"tenant_id": "t-1", "customer_email": "a@example.com", "lines": lines}
    assert PlaceOrder(**made, currency="JPY").currency == "JPY"
    assert PlaceOrder(**made).currency is None  # DEFAULT_CURRENCY's, when paid
    for bad in ("jpy", "", "XYZ"):
        with pytest.raises(InvalidCommand, match="ISO 4217"):
            PlaceOrder.parse({**made, "currency": bad})


def test_an_order_placed_before_currencies_reads_as_the_default_currency() -> None:
    v1 = {"tenant_id": "t-1", "customer_email": "a@example.com", "lines": [], "total_cents": 0}
    loaded = registry.load(OrderPlaced.TYPE, 1, v1)
    assert isinstance(loaded, OrderPlaced) and loaded.currency is None
    assert OrderPlaced.SCHEMA_VERSION == 3 and loaded.customer_phone is None


def _standard(amount: Any) -> str:
    data = {"payment_id": "pay-1", "order_id": "o-1", "amount_cents": amount, "currency": "EUR"}
    return json.dumps({"type": "payment.succeeded", "data": data})


def _stripe_refund(total: Any, listed: Any = 100) -> str:
    obj = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_1",
        "amount_refunded": total,
        "currency": "eur",
        "metadata": {"order_id": "o-1"},
        "refunds": {"object": "list", "data": [{"id": "re_1", "amount": listed}]},
    }
    return json.dumps({"id": "evt_1", "type": "charge.refunded", "data": {"object": obj}})


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.integers(min_value=0, max_value=10**6).map(str),  # "4900"
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _read(verified: Verified, text: str) -> Any:
    return notice_for("gw", verified, parse_document(text))


@PROPERTIES
@given(JSON_VALUES)
def test_an_amount_is_a_json_integer_or_the_body_is_refused(amount: Any) -> None:
    """Strings, booleans, floats, arrays and objects are 400; an integer out of range 422;
    an integer in range is the notice's amount, exactly."""
    for verified, text, field in (
        (STANDARD, _standard(amount), "amount_cents"),
        (STRIPE, _stripe_refund(amount), "refunded_total_cents"),
        (STRIPE, _stripe_refund(100, amount), None),
    ):
        if type(amount) is int and 0 <= amount <= 10**12:
            notice = _read(verified, text)
            if field is not None:
                assert getattr(notice, field) == amount
            else:
                assert [r.amount_cents for r in notice.refunds] == [amount]
        elif type(amount) is int or amount is None:
            with pytest.raises(Unprocessable):
                _read(verified, text)
        else:
            with pytest.raises(BadRequest, match="JSON integer"):
                _read(verified, text)


def test_the_issue_s_lax_amounts_are_refused() -> None:
    for amount in ("4900", True, 4900.0, 49.5):
        with pytest.raises(BadRequest):
            _read(STANDARD, _standard(amount))
    for text in ('{"amount_cents": NaN}', '{"a": Infinity}', '{"a": -Infinity}'):
        with pytest.raises(BadRequest, match="not JSON"):
            parse_document(text)


KEYS = st.text(min_size=1, max_size=8)


@PROPERTIES
@given(
    st.dictionaries(KEYS, st.integers() | st.text(max_size=5), min_size=1, max_size=5),
    st.data(),
    st.booleans(),
)
def test_a_key_given_twice_in_any_object_is_refused(
    fields: dict[str, Any], data: st.DataObject, nested: bool
) -> None:
    key = data.draw(st.sampled_from(sorted(fields)))
    again = data.draw(st.integers() | st.text(max_size=5))
    pairs = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items()]
    pairs.insert(data.draw(st.integers(0, len(pairs))), f"{json.dumps(key)}: {json.dumps(again)}")
    inner = "{" + ", ".join(pairs) + "}"
    text = f'{{"type": "payment.succeeded", "data": {inner}}}' if nested else inner
    with pytest.raises(BadRequest, match="repeats a key"):
        parse_document(text)
    # Without the repetition, the same body reads as JSON does.
    assert parse_document(json.dumps(fields)) == fields


def test_the_type_given_twice_is_refused_not_read_as_the_last() -> None:
    text = (
        '{"type": "payment.refunded", "type": "payment.succeeded", "data": '
        '{"payment_id": "pay-1", "order_id": "o-1", "amount_cents": 2500, "currency": "EUR"}}'
    )
    with pytest.raises(BadRequest, match="repeats a key"):
        parse_document(text)


def test_stripe_currencies_are_upper_cased_and_others_kept_as_sent() -> None:
    notice = _read(STRIPE, _stripe_refund(100))
    assert (notice.currency, notice.refunded_total_cents) == ("EUR", 100)
    assert [(r.refund_id, r.amount_cents) for r in notice.refunds] == [("re_1", 100)]
    lower = json.loads(_standard(2500))
    lower["data"]["currency"] = "jpy"
    assert _read(STANDARD, json.dumps(lower)).currency == "jpy"  # refused when applied
