"""Applying a verified payment notice to its order (`ApplyPaymentNotice`); domain.payments
re-exports these names (the accepting and verifying half lives there, kept apart for size).

- **Currency first**: a notice that moves money must state an upper-case ISO 4217 code
  (domain/money.py) equal to the order's (an order without one is in `default_currency`,
  the DEFAULT_CURRENCY setting). Otherwise `UnknownCurrency` or `CurrencyMismatch`: nothing
  is applied, the job fails for review with that reason.
- **succeeded** makes the order PAID (already paid by this payment: no change); **failed**
  is recorded on the order.
- **refunded**: several refunds per payment, each keyed by its refund id; together never
  more than the payment. A gateway that sends each refund (`refund_id`, `amount_cents`) gets
  one ledger entry per id, a redelivery changes nothing. A gateway that sends the payment's
  cumulative total (Stripe's `charge.refunded`: `amount_refunded`, and maybe its `refunds`
  list) gets what the order does not hold yet: the listed refunds it does not know when they
  add up to exactly the difference, else one refund of the difference keyed
  `cumulative-<total>`. A total not above what the order holds (a redelivery, or an older
  notice after a newer one) changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from domain.commands import Command, UnitOfWorkPort, handlers
from domain.errors import DomainError, RuleViolation
from domain.money import FALLBACK_CURRENCY, Currency, describe_amount, is_known_currency
from domain.ordering import Order, OrderStatus

if TYPE_CHECKING:
    from domain.payments import PaymentWebhookReceived

__all__ = [
    "ApplyPaymentNotice",
    "Cents",
    "CurrencyMismatch",
    "GatewayName",
    "MovingKind",
    "OrderOfAnotherTenant",
    "OrderRef",
    "PaymentRef",
    "RefundBeforePayment",
    "RefundLine",
    "UnknownCurrency",
    "WebhookId",
]

MovingKind = Literal["succeeded", "failed", "refunded"]

# Ids a gateway sends: printable ASCII without spaces, so they are safe in logs and keys.
_REF = r"^[!-~]+$"
GatewayName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
WebhookId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_REF)]
PaymentRef = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_REF)]
OrderRef = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_REF)]
# An amount in its currency's minor unit; strict: "4900", true and 49.0 are not amounts.
Cents = Annotated[int, Field(ge=0, le=10**12, strict=True)]
MAX_REFUNDS = 100  # refunds one notice may list


class RefundBeforePayment(DomainError):
    """A refund arrived before the payment it gives back: retry it later, it is not lost."""


class OrderOfAnotherTenant(RuleViolation):
    """The notice's order belongs to another tenant than its webhook row says."""


class UnknownCurrency(RuleViolation):
    """The notice states no currency, or one that is not an upper-case ISO 4217 code."""

    reason = "unknown_currency"


class CurrencyMismatch(RuleViolation):
    """The notice's currency is not the order's."""

    reason = "currency_mismatch"


class RefundLine(BaseModel):
    """One refund a gateway listed: its id and the money it gave back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    refund_id: PaymentRef
    amount_cents: Cents


class ApplyPaymentNotice(Command):
    gateway: GatewayName
    kind: MovingKind
    payment_id: PaymentRef
    order_id: OrderRef
    amount_cents: Cents = 0
    # As the gateway stated it (checked by the handler, so that a wrong one is a failed job
    # for review with its reason, not a validation error).
    currency: str | None = Field(default=None, max_length=8)
    # The currency of an order placed without one (the DEFAULT_CURRENCY setting).
    default_currency: Currency = FALLBACK_CURRENCY
    reason: str = Field(default="declined", min_length=1, max_length=200)
    # Refunds: this refund's id ("": a payment's only refund), or the cumulative total.
    refund_id: PaymentRef | None = None
    refunded_total_cents: Cents | None = None
    refunds: tuple[RefundLine, ...] = Field(default=(), max_length=MAX_REFUNDS)
    # The tenant the order must belong to (the webhook row's); None: not checked.
    tenant_id: str | None = Field(default=None, max_length=64)

    # Currency codes are compared as sent: " EUR" is not EUR.
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="after")
    def _distinct_refunds(self) -> ApplyPaymentNotice:
        ids = [line.refund_id for line in self.refunds]
        if len(ids) != len(set(ids)):
            raise ValueError("each refund may be listed once")
        return self

    @classmethod
    def of(
        cls,
        received: PaymentWebhookReceived,
        tenant_id: str | None = None,
        default_currency: str = FALLBACK_CURRENCY,
    ) -> ApplyPaymentNotice:
        if received.kind in ("other", "unmapped"):
            raise ValueError(f"a webhook of kind {received.kind!r} moves no money")
        return cls.model_validate(
            {
                "gateway": received.gateway,
                "kind": received.kind,
                "payment_id": received.payment_id,
                "order_id": received.order_id,
                "amount_cents": received.amount_cents or 0,
                "currency": received.currency,
                "default_currency": default_currency,
                "reason": received.reason or "declined",
                "refund_id": received.refund_id,
                "refunded_total_cents": received.refunded_total_cents,
                "refunds": received.refunds,
                "tenant_id": tenant_id,
            }
        )


@handlers.register(ApplyPaymentNotice)
def _apply_notice(cmd: ApplyPaymentNotice, uow: UnitOfWorkPort) -> str:
    """One effect per movement: what the order already shows is not done again."""
    order = uow.get(Order, cmd.order_id)
    if cmd.tenant_id is not None and order.tenant_id != cmd.tenant_id:
        raise OrderOfAnotherTenant(
            f"order {order.id} does not belong to the tenant the payment notice was accepted "
            "for: not applied"
        )
    payment = (cmd.gateway, cmd.payment_id)
    described = f"{cmd.gateway} payment {cmd.payment_id}"
    if cmd.kind == "failed":
        if payment not in order.failed_payments:
            order.record_payment_failure(cmd.gateway, cmd.payment_id, cmd.reason)
        return order.id
    currency = _checked_currency(order, cmd, described)
    if cmd.kind == "succeeded":
        if order.paid_by == payment:
            return order.id
        if order.status != OrderStatus.PENDING:
            raise RuleViolation(
                f"order {order.id} is {order.status}, yet {described} took "
                f"{describe_amount(cmd.amount_cents, currency)} for it: refund it at the "
                "gateway or settle it by hand"
            )
        order.pay(cmd.payment_id, cmd.amount_cents, gateway=cmd.gateway, currency=currency)
        return order.id
    if order.paid_by is None:
        raise RefundBeforePayment(
            f"order {order.id} has no payment yet for the refund of {described}; "
            "the refund is retried until its payment has been applied"
        )
    if cmd.refunded_total_cents is not None:
        _refund_cumulative(order, cmd, cmd.refunded_total_cents)
    else:
        _refund_one(order, cmd, described, currency)
    return order.id


def _checked_currency(order: Order, cmd: ApplyPaymentNotice, described: str) -> str:
    expected = order.currency or cmd.default_currency
    if not is_known_currency(cmd.currency):
        stated = "no currency" if cmd.currency is None else f"currency {cmd.currency!r}"
        raise UnknownCurrency(
            f"{described} states {stated}, not an upper-case ISO 4217 code: not applied to "
            f"order {order.id} (in {expected}); review it with the gateway"
        )
    if cmd.currency != expected:
        raise CurrencyMismatch(
            f"{described} is in {cmd.currency}, order {order.id} is in {expected}: not "
            "applied; review it with the gateway"
        )
    return expected


def _refund_one(order: Order, cmd: ApplyPaymentNotice, described: str, currency: str) -> None:
    refund_id = cmd.refund_id or ""
    known = order.refunds.get((cmd.gateway, cmd.payment_id, refund_id))
    if known == cmd.amount_cents:
        return  # redelivered
    if known is not None:
        named = f"refund {refund_id}" if refund_id else "its refund (sent without an id)"
        raise RuleViolation(
            f"{described}: {named} gave back {describe_amount(known, currency)} already; "
            f"the same refund now says {describe_amount(cmd.amount_cents, currency)}: "
            "review it with the gateway"
        )
    order.refund(cmd.gateway, cmd.payment_id, cmd.amount_cents, refund_id)


def _refund_cumulative(order: Order, cmd: ApplyPaymentNotice, total: int) -> None:
    held = order.refunded_by(cmd.gateway, cmd.payment_id)
    if total <= held:
        return  # a redelivery, or an older total after a newer one
    missing = total - held
    new = [
        line
        for line in cmd.refunds
        if (cmd.gateway, cmd.payment_id, line.refund_id) not in order.refunds
    ]
    if new and sum(line.amount_cents for line in new) == missing:
        # Stripe lists the newest first: the ledger records them oldest first.
        for line in reversed(new):
            order.refund(cmd.gateway, cmd.payment_id, line.amount_cents, line.refund_id)
    else:
        order.refund(cmd.gateway, cmd.payment_id, missing, f"cumulative-{total}")
