"""Events, the registry, upcasters and aggregate rules, without a database."""

from __future__ import annotations

import pytest

from domain import EventSchemaError, RuleViolation, UnknownEventType
from domain.events import DomainEvent, EventRegistry, registry
from domain.ordering import Order, OrderCancelled, OrderPaid
from domain.products import Product, ProductCreated
from domain.tenancy import Tenant


def test_v1_product_created_is_upcast_to_integer_cents() -> None:
    loaded = registry.load(
        "product.created",
        1,
        {"tenant_id": "t", "name": "N", "sku": "S", "price": 19.99, "stock_quantity": 3},
    )
    assert isinstance(loaded, ProductCreated)
    assert loaded.price_cents == 1999


def test_unknown_type_names_the_type() -> None:
    with pytest.raises(UnknownEventType, match=r"unknown event type 'order\.teleported'"):
        registry.load("order.teleported", 1, {})


def test_payload_from_a_newer_producer_is_refused_clearly() -> None:
    with pytest.raises(EventSchemaError, match="v3 is newer than this code"):
        registry.load("product.created", 3, {})


def test_schema_invalid_payload_says_which_field() -> None:
    with pytest.raises(EventSchemaError, match="reason: Field required"):
        registry.load("order.cancelled", 1, {})


def test_missing_upcaster_is_reported() -> None:
    class V3(DomainEvent):
        TYPE = "thing.v3"
        SCHEMA_VERSION = 3

    local = EventRegistry()
    local.register(V3)
    with pytest.raises(EventSchemaError, match=r"no upcaster for thing\.v3 from v1 to v2"):
        local.load("thing.v3", 1, {})


def test_a_type_name_cannot_be_registered_twice() -> None:
    class Clash(DomainEvent):
        TYPE = "product.created"

    with pytest.raises(ValueError, match="already registered by ProductCreated"):
        registry.register(Clash)


def test_events_are_frozen() -> None:
    evt = OrderCancelled(reason="r")
    with pytest.raises(Exception, match="frozen"):
        evt.reason = "other"  # type: ignore[misc]


def test_product_cannot_go_below_zero_stock() -> None:
    item = Product.create("p", tenant_id="t", name="N", sku="S", price_cents=100, stock=2)
    item.adjust_stock(-2, "sold")
    assert item.stock_quantity == 0 and item.version == 2
    with pytest.raises(RuleViolation, match="has 0 in stock"):
        item.adjust_stock(-1, "sold")
    assert len(item.take_pending()) == 2


def test_only_pending_orders_can_be_paid_or_cancelled() -> None:
    order = Order.place(
        "o", "t", "a@example.com", [{"product_id": "p", "quantity": 2, "unit_price_cents": 5}]
    )
    with pytest.raises(RuleViolation, match="totals 10 cents, payment was 9"):
        order.pay("ref", 9)
    order.pay("ref", 10)
    with pytest.raises(RuleViolation, match="is PAID; only PENDING orders can be cancelled"):
        order.cancel("late")
    assert [type(e) for _, e in order.take_pending()][-1] is OrderPaid


def test_replaying_history_restores_state_and_version() -> None:
    original = Tenant.onboard("t", "Acme", "ops@example.com", "free")
    original.approve()
    original.enhance_profile({"a": "1"})
    original.enhance_profile({"b": "2"})
    history = original.take_pending()
    copy = Tenant("t")
    for version, evt in history:
        copy.replay(evt, version)
    assert (copy.status, copy.profile, copy.version) == ("approved", {"a": "1", "b": "2"}, 4)
    with pytest.raises(RuleViolation, match="already approved"):
        copy.approve()
