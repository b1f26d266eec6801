"""Orders: placed as PENDING reserving stock, paid, or cancelled restoring stock.

Payments (domain/payments.py applies the gateways' notices): a payment makes the order PAID,
a failed payment is recorded on it, refunds give money back (several per payment, each keyed
by its refund id: PARTIALLY_REFUNDED, then REFUNDED once all of it is). Each money movement
is also a ledger entry (a projection of OrderPaid and OrderRefunded).

An order has a currency (domain/money.py; amounts are in its minor unit). Orders placed
before currencies existed, or without one, carry None: theirs is DEFAULT_CURRENCY.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.errors import RuleViolation
from domain.events import DomainEvent, event, registry
from domain.limits import MAX_AMOUNT_CENTS, MAX_ORDER_LINES, MAX_QUANTITY, Id
from domain.money import Currency
from domain.phones import PhoneNumber
from domain.products import Product
from domain.tenancy import require_tenant

__all__ = [
    "CancelOrder",
    "Order",
    "OrderCancelled",
    "OrderLine",
    "OrderPaid",
    "OrderPaymentFailed",
    "OrderPlaced",
    "OrderRefunded",
    "OrderStatus",
    "PayOrder",
    "PlaceOrder",
    "refund_status",
]


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    CANCELLED = "CANCELLED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"  # paid, part of it given back
    REFUNDED = "REFUNDED"  # every paid cent given back


@event
class OrderPlaced(DomainEvent):
    TYPE = "order.placed"
    # v1 had no currency; v2 names it (None: DEFAULT_CURRENCY, as for every v1 order).
    # v3 carries the customer's phone (E.164, None: none given), as it carries the address:
    # projections are rebuilt from events alone, and `privacy erase` pseudonymises both.
    SCHEMA_VERSION = 3
    tenant_id: str
    customer_email: str
    lines: list[dict[str, Any]]
    total_cents: int
    currency: str | None
    customer_phone: str | None = None


@registry.upcaster(OrderPlaced.TYPE, from_version=1)
def _order_placed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    payload["currency"] = None
    return payload


@registry.upcaster(OrderPlaced.TYPE, from_version=2)
def _order_placed_v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    payload["customer_phone"] = None
    return payload


@event
class OrderPaid(DomainEvent):
    TYPE = "order.paid"
    payment_ref: str
    amount_cents: int
    # The gateway that took the money; "manual" for PayOrder without one (and older events).
    gateway: str = "manual"
    currency: str | None = None  # the order's; None: DEFAULT_CURRENCY (and older events)


@event
class OrderPaymentFailed(DomainEvent):
    TYPE = "order.payment_failed"
    gateway: str
    payment_ref: str
    reason: str


@event
class OrderRefunded(DomainEvent):
    TYPE = "order.refunded"
    gateway: str
    payment_ref: str
    amount_cents: int
    # The gateway's refund id; "" for a payment's only refund before several were allowed.
    refund_id: str = ""
    currency: str | None = None
    # The order's paid and refunded totals after this refund (projections read only events).
    paid_cents: int
    refunded_total_cents: int


@event
class OrderCancelled(DomainEvent):
    TYPE = "order.cancelled"
    reason: str


class Order(Aggregate):
    TYPE = "order"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = ""
        self.lines: list[dict[str, Any]] = []
        self.total_cents = 0
        self.currency: str | None = None
        # (gateway, payment ref) of the payment that made it PAID, and the money it moved.
        self.paid_by: tuple[str, str] | None = None
        self.paid_cents = 0
        self.refunded_cents = 0
        self.failed_payments: set[tuple[str, str]] = set()
        # (gateway, payment ref, refund id) -> the money that refund gave back.
        self.refunds: dict[tuple[str, str, str], int] = {}

    def apply(self, event: DomainEvent) -> None:
        match event:
            case OrderPlaced():
                self.status, self.tenant_id = OrderStatus.PENDING, event.tenant_id
                self.lines, self.total_cents = list(event.lines), event.total_cents
                self.currency = event.currency
            case OrderPaid():
                self.status = OrderStatus.PAID
                self.paid_by, self.paid_cents = (
                    (event.gateway, event.payment_ref),
                    event.amount_cents,
                )
                # The currency it was paid in (the default one, resolved): refunds are in it.
                self.currency = event.currency or self.currency
            case OrderPaymentFailed():
                self.failed_payments.add((event.gateway, event.payment_ref))
            case OrderRefunded():
                key = (event.gateway, event.payment_ref, event.refund_id)
                self.refunds[key] = event.amount_cents
                self.refunded_cents = event.refunded_total_cents
                self.status = refund_status(self.refunded_cents, self.paid_cents)
            case OrderCancelled():
                self.status = OrderStatus.CANCELLED

    @classmethod
    def place(
        cls,
        order_id: str,
        tenant_id: str,
        customer_email: str,
        lines: list[dict[str, Any]],
        currency: str | None = None,
        *,
        customer_phone: str | None = None,
    ) -> Order:
        order = cls(order_id)
        total = sum(int(line["quantity"]) * int(line["unit_price_cents"]) for line in lines)
        order._record(
            OrderPlaced(
                tenant_id=tenant_id,
                customer_email=customer_email,
                lines=lines,
                total_cents=total,
                currency=currency,
                customer_phone=customer_phone,
            )
        )
        return order

    def refunded_by(self, gateway: str, payment_ref: str) -> int:
        """What the refunds of this payment gave back so far."""
        return sum(
            cents
            for (g, ref, _), cents in self.refunds.items()
            if (g, ref) == (gateway, payment_ref)
        )

    def _require_pending(self, action: str) -> None:
        if self.status != OrderStatus.PENDING:
            raise RuleViolation(
                f"order {self.id} is {self.status}; only PENDING orders can {action}"
            )

    def pay(
        self,
        payment_ref: str,
        amount_cents: int,
        gateway: str = "manual",
        currency: str | None = None,
    ) -> None:
        """PAID by this payment of the whole total (in `currency`, the order's: checked by
        the caller; None: the order's own, possibly None)."""
        self._require_pending("be paid")
        if amount_cents != self.total_cents:
            raise RuleViolation(
                f"order {self.id} totals {self.total_cents} cents, payment was {amount_cents}"
            )
        self._record(
            OrderPaid(
                payment_ref=payment_ref,
                amount_cents=amount_cents,
                gateway=gateway,
                currency=currency or self.currency,
            )
        )

    def record_payment_failure(self, gateway: str, payment_ref: str, reason: str) -> None:
        """A payment attempt failed at the gateway; the order keeps its status."""
        self._record(OrderPaymentFailed(gateway=gateway, payment_ref=payment_ref, reason=reason))

    def refund(
        self, gateway: str, payment_ref: str, amount_cents: int, refund_id: str = ""
    ) -> None:
        """Give back part or all of the payment that paid this order (one refund of several:
        together they never give back more than was paid)."""
        if self.paid_by != (gateway, payment_ref):
            raise RuleViolation(f"order {self.id} was not paid by {gateway} payment {payment_ref}")
        if not 0 < amount_cents <= self.paid_cents - self.refunded_cents:
            raise RuleViolation(
                f"order {self.id}: a refund of {amount_cents} cents exceeds the "
                f"{self.paid_cents - self.refunded_cents} cents still paid"
            )
        self._record(
            OrderRefunded(
                gateway=gateway,
                payment_ref=payment_ref,
                amount_cents=amount_cents,
                refund_id=refund_id,
                currency=self.currency,
                paid_cents=self.paid_cents,
                refunded_total_cents=self.refunded_cents + amount_cents,
            )
        )

    def cancel(self, reason: str) -> None:
        self._require_pending("be cancelled")
        self._record(OrderCancelled(reason=reason))


def refund_status(refunded_cents: int, paid_cents: int) -> OrderStatus:
    """REFUNDED once every paid cent went back, PARTIALLY_REFUNDED before."""
    if refunded_cents >= paid_cents:
        return OrderStatus.REFUNDED
    return OrderStatus.PARTIALLY_REFUNDED if refunded_cents > 0 else OrderStatus.PAID


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    product_id: Id
    quantity: int = Field(gt=0, le=MAX_QUANTITY)


class PlaceOrder(Command):
    # A refused phone number must not be quoted by the error (pydantic quotes inputs).
    model_config = ConfigDict(**Command.model_config, hide_input_in_errors=True)

    order_id: Id = Field(default_factory=new_id)
    tenant_id: Id
    customer_email: EmailStr
    # For SMS notifications (if the tenant sends them): "+<country code><number>", stored in
    # E.164 (domain/phones.py); None: no SMS.
    customer_phone: PhoneNumber | None = None
    lines: list[OrderLine] = Field(min_length=1, max_length=MAX_ORDER_LINES)
    # ISO 4217 (upper-case); None: the DEFAULT_CURRENCY setting's, resolved when paid.
    currency: Currency | None = None

    @field_validator("lines")
    @classmethod
    def _distinct_products(cls, lines: list[OrderLine]) -> list[OrderLine]:
        ids = [line.product_id for line in lines]
        if len(ids) != len(set(ids)):
            raise ValueError("each product may appear on one line only")
        return lines


class PayOrder(Command):
    order_id: Id
    payment_ref: str = Field(min_length=1, max_length=128)
    amount_cents: int = Field(ge=0, le=MAX_ORDER_LINES * MAX_QUANTITY * MAX_AMOUNT_CENTS)


class CancelOrder(Command):
    order_id: Id
    reason: str = Field(default="cancelled", min_length=1, max_length=200)


@handlers.register(PlaceOrder)
def place_order(cmd: PlaceOrder, uow: UnitOfWorkPort) -> str:
    require_tenant(uow, cmd.tenant_id)
    lines: list[dict[str, Any]] = []
    # Sorted so two orders touching the same products lock them in the same order.
    for line in sorted(cmd.lines, key=lambda item: item.product_id):
        product = uow.get(Product, line.product_id)
        if product.tenant_id != cmd.tenant_id:
            raise RuleViolation(
                f"product {product.id} belongs to another tenant than {cmd.tenant_id}"
            )
        product.adjust_stock(-line.quantity, "order-reserved", order_id=cmd.order_id)
        lines.append(
            {
                "product_id": product.id,
                "quantity": line.quantity,
                "unit_price_cents": product.price_cents,
            }
        )
    uow.add(
        Order.place(
            cmd.order_id,
            cmd.tenant_id,
            str(cmd.customer_email),
            lines,
            cmd.currency,
            customer_phone=cmd.customer_phone,
        )
    )
    return cmd.order_id


@handlers.register(PayOrder)
def pay_order(cmd: PayOrder, uow: UnitOfWorkPort) -> str:
    uow.get(Order, cmd.order_id).pay(cmd.payment_ref, cmd.amount_cents)
    return cmd.order_id


@handlers.register(CancelOrder)
def cancel_order(cmd: CancelOrder, uow: UnitOfWorkPort) -> str:
    order = uow.get(Order, cmd.order_id)
    order.cancel(cmd.reason)
    for line in sorted(order.lines, key=lambda item: str(item["product_id"])):
        uow.get(Product, str(line["product_id"])).adjust_stock(
            int(line["quantity"]), "order-cancelled", order_id=order.id
        )
    return cmd.order_id
