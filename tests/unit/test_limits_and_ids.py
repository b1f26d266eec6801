"""Property tests of the domain's limits and the id rule: whatever is accepted fits the
columns (64-bit amounts, exact ids), whatever is refused is refused with a clear message."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.limits import MAX_AMOUNT_CENTS, MAX_ORDER_LINES, MAX_QUANTITY, MAX_STOCK
from domain.ordering import OrderLine, PlaceOrder
from domain.products import AdjustStock, CreateProduct
from outbox.keys import key_problem

INT64 = 2**63 - 1
INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


@given(st.text(max_size=300))
def test_an_accepted_id_is_visible_normalised_and_fits_its_column(text: str) -> None:
    problem = key_problem(text, max_length=64)
    if problem is None:
        assert 0 < len(text) <= 64
        assert text == text.strip()
        assert unicodedata.is_normalized("NFC", text)
        assert not any(unicodedata.category(ch) in INVISIBLE for ch in text)
        assert not any(ch.isspace() and ch != " " for ch in text)
    else:
        assert problem  # a reason an operator can read


@given(
    st.text(min_size=1, max_size=20).filter(lambda t: key_problem(t) is None),
    st.sampled_from(["\x00", "\u200b", "\ufeff", "\u2028", "\t", "\x1f", "\u202e"]),
    st.integers(0, 20),
)
def test_an_id_with_a_control_nul_or_zero_width_character_anywhere_is_refused(
    base: str, bad: str, at: int
) -> None:
    spot = min(at, len(base))
    assert key_problem(base[:spot] + bad + base[spot:]) is not None


@given(st.text(min_size=1, max_size=10).filter(lambda t: key_problem(t) is None))
def test_an_id_with_surrounding_spaces_is_refused(base: str) -> None:
    assert key_problem(f" {base}") is not None
    assert key_problem(f"{base} ") is not None


def test_decomposed_accents_are_refused_and_composed_ones_accepted() -> None:
    assert key_problem("café") is None
    assert key_problem("cafe\u0301") is not None


@given(price=st.integers(-(2**70), 2**70), stock=st.integers(-(2**70), 2**70))
def test_a_product_is_accepted_only_within_its_bounds(price: int, stock: int) -> None:
    def make() -> CreateProduct:
        return CreateProduct(
            tenant_id="t", name="anvil", sku="a-1", price_cents=price, stock_quantity=stock
        )

    if 0 <= price <= MAX_AMOUNT_CENTS and 0 <= stock <= MAX_STOCK:
        assert make().price_cents == price
    else:
        with pytest.raises(ValidationError, match=r"price_cents|stock_quantity"):
            make()


@given(st.integers(-(2**80), 2**80))
def test_a_stock_adjustment_is_bounded(delta: int) -> None:
    if -MAX_STOCK <= delta <= MAX_STOCK:
        assert AdjustStock(product_id="p", delta=delta).delta == delta
    else:
        with pytest.raises(ValidationError, match="delta"):
            AdjustStock(product_id="p", delta=delta)


@given(
    st.lists(st.integers(1, MAX_QUANTITY), min_size=1, max_size=MAX_ORDER_LINES),
    st.integers(0, MAX_AMOUNT_CENTS),
)
def test_the_largest_accepted_order_total_fits_in_64_bits(
    quantities: list[int], price: int
) -> None:
    order = PlaceOrder(
        tenant_id="t",
        customer_email="w@example.com",
        lines=[OrderLine(product_id=f"p{n}", quantity=q) for n, q in enumerate(quantities)],
    )
    total = sum(line.quantity for line in order.lines) * price
    assert total <= INT64


@given(st.integers(-(2**40), 2**40))
def test_an_order_line_quantity_is_bounded(quantity: int) -> None:
    if 0 < quantity <= MAX_QUANTITY:
        assert OrderLine(product_id="p", quantity=quantity).quantity == quantity
    else:
        with pytest.raises(ValidationError, match="quantity"):
            OrderLine(product_id="p", quantity=quantity)
