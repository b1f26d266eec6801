"""Payments: gateway webhooks accepted once, applied to orders once, checked against the ledger.

- **Accept** (`accept_webhook`, called by `outbox serve` after it verified the signature):
  one transaction writes the `payment_webhooks` row (unique per gateway and webhook id: a
  redelivery finds it and changes nothing), the `PaymentWebhookReceived` event of a new
  PaymentWebhook aggregate and its outbox row on `payment-events`.
- **Apply** (`ApplyPaymentNotice`, run by the `process-payment-webhook` job): succeeded makes
  the order PAID (already paid by this payment: no change), failed is recorded on the order,
  refunded gives money back. Each movement is a ledger entry, a projection of the order's
  event, unique per (gateway, payment id, kind): one effect however often a notice comes.
  A refund whose payment has not been applied yet raises `RefundBeforePayment` (retried).
- **Reconcile** (`ledger_mismatches`, `RecordLedgerMismatches`): each order's paid and refunded
  totals must equal its ledger entries; each difference is recorded as a `PaymentLedgerMismatch`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import Connection, exists, func, insert, select
from sqlalchemy.exc import IntegrityError

from domain.aggregate import Aggregate
from domain.bus import CommandBus
from domain.commands import Command, UnitOfWorkPort, handlers
from domain.errors import DomainError, NotFound, RuleViolation
from domain.events import DomainEvent, event
from domain.ordering import Order, OrderStatus
from domain.schema import orders, payment_ledger, payment_webhooks
from domain.unit_of_work import CommandContext
from outbox.envelope import canonical_json
from outbox.types import utcnow

__all__ = [
    "AcceptPaymentWebhook",
    "Acceptance",
    "ApplyPaymentNotice",
    "PaymentKind",
    "PaymentLedgerMismatch",
    "PaymentReconciliation",
    "PaymentWebhook",
    "PaymentWebhookReceived",
    "RecordLedgerMismatches",
    "RefundBeforePayment",
    "accept_webhook",
    "ledger_mismatches",
    "webhook_aggregate_id",
]

PaymentKind = Literal["succeeded", "failed", "refunded", "other"]
MovingKind = Literal["succeeded", "failed", "refunded"]

# Ids a gateway sends: printable ASCII without spaces, so they are safe in logs and keys.
_REF = r"^[!-~]+$"
GatewayName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
WebhookId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_REF)]
PaymentRef = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_REF)]
OrderRef = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_REF)]
Cents = Annotated[int, Field(ge=0, le=10**12)]
_NAMESPACE = uuid.UUID("6f7c2f5e-3a1b-4c55-9a57-1d0f2b9e8a41")


class RefundBeforePayment(DomainError):
    """A refund arrived before the payment it gives back: retry it later, it is not lost."""


def webhook_aggregate_id(gateway: str, webhook_id: str) -> str:
    """The same webhook always gets the same aggregate id (and `payment_webhooks.id`)."""
    return str(uuid.uuid5(_NAMESPACE, f"{gateway}\x00{webhook_id}"))


# -- accepting a webhook --------------------------------------------------------------------


class PaymentNotice(BaseModel):
    """What a webhook says about a payment, as the web layer normalised it per gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gateway: GatewayName
    webhook_id: WebhookId
    kind: PaymentKind
    # The gateway's own event type, e.g. payment_intent.succeeded.
    gateway_type: str = Field(min_length=1, max_length=100)
    payment_id: PaymentRef | None = None
    order_id: OrderRef | None = None
    amount_cents: Cents | None = None
    currency: str | None = Field(default=None, max_length=8)
    reason: str | None = Field(default=None, max_length=200)
    sent_at: AwareDatetime

    @model_validator(mode="after")
    def _complete(self) -> PaymentNotice:
        if self.kind == "other":
            return self
        missing = [name for name in ("payment_id", "order_id") if getattr(self, name) is None]
        if self.kind != "failed" and self.amount_cents is None:
            missing.append("amount_cents")
        if missing:
            raise ValueError(f"a {self.kind} payment notice needs {', '.join(missing)}")
        return self


@event
class PaymentWebhookReceived(DomainEvent):
    TYPE = "payment.webhook_received"
    gateway: str
    webhook_id: str
    kind: PaymentKind
    gateway_type: str
    payment_id: str | None = None
    order_id: str | None = None
    amount_cents: int | None = None
    currency: str | None = None
    reason: str | None = None
    sent_at: AwareDatetime


class PaymentWebhook(Aggregate):
    TYPE = "payment_webhook"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.kind = ""

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, PaymentWebhookReceived):
            self.kind = event.kind

    @classmethod
    def receive(cls, notice: PaymentNotice) -> PaymentWebhook:
        webhook = cls(webhook_aggregate_id(notice.gateway, notice.webhook_id))
        webhook._record(PaymentWebhookReceived(**notice.model_dump()))
        return webhook


class AcceptPaymentWebhook(Command):
    """A verified webhook: its notice, and the raw body and headers exactly as received."""

    notice: PaymentNotice
    scheme: str = Field(min_length=1, max_length=32)
    body: str
    headers: dict[str, str]

    # A body is stored byte for byte: no whitespace stripping (Command strips strings).
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


@handlers.register(AcceptPaymentWebhook)
def _record_webhook(cmd: AcceptPaymentWebhook, uow: UnitOfWorkPort) -> str:
    webhook = PaymentWebhook.receive(cmd.notice)
    uow.add(webhook)
    return webhook.id


@dataclass(frozen=True, slots=True)
class Acceptance:
    webhook_row_id: str
    duplicate: bool  # True: a redelivery; nothing was written


class _Duplicate(Exception):
    """Rolls the transaction back: the webhook row already exists (or another key failed)."""

    def __init__(self, error: IntegrityError) -> None:
        super().__init__(str(error))
        self.error = error


def accept_webhook(
    bus: CommandBus, cmd: AcceptPaymentWebhook, context: CommandContext | None = None
) -> Acceptance:
    """The webhook row, its event and the event's outbox row, in ONE transaction; a webhook
    seen before (same gateway and id, even from a concurrent delivery) writes nothing.

    The row goes first: a concurrent delivery of the same webhook waits on its unique key and
    then finds it. A lost connection raises the driver's error with nothing committed, or
    with everything committed: either way the gateway's retry is then answered correctly.
    """
    notice = cmd.notice
    row_id = webhook_aggregate_id(notice.gateway, notice.webhook_id)
    row = {
        "id": row_id,
        "gateway": notice.gateway,
        "webhook_id": notice.webhook_id,
        "scheme": cmd.scheme,
        "kind": notice.kind,
        "payment_id": notice.payment_id,
        "order_id": notice.order_id,
        "body": cmd.body,
        "headers": canonical_json(cmd.headers),
        "received_at": utcnow(),
    }
    try:
        with bus.engine.begin() as conn:
            try:
                conn.execute(insert(payment_webhooks), row)
            except IntegrityError as exc:
                raise _Duplicate(exc) from exc
            bus.run_in(conn, cmd, context or CommandContext())
    except _Duplicate as dup:
        if not _webhook_exists(bus, notice.gateway, notice.webhook_id):
            raise dup.error from None  # another constraint: not a redelivery
        return Acceptance(row_id, duplicate=True)
    return Acceptance(row_id, duplicate=False)


def _webhook_exists(bus: CommandBus, gateway: str, webhook_id: str) -> bool:
    w = payment_webhooks
    with bus.engine.connect() as conn:
        return bool(
            conn.execute(
                select(exists().where(w.c.gateway == gateway, w.c.webhook_id == webhook_id))
            ).scalar()
        )


# -- applying a notice to its order ---------------------------------------------------------


class ApplyPaymentNotice(Command):
    gateway: GatewayName
    kind: MovingKind
    payment_id: PaymentRef
    order_id: OrderRef
    amount_cents: Cents = 0
    reason: str = Field(default="declined", min_length=1, max_length=200)

    @classmethod
    def of(cls, received: PaymentWebhookReceived) -> ApplyPaymentNotice:
        if received.kind == "other":
            raise ValueError("a webhook of kind 'other' moves no money")
        return cls.model_validate(
            {
                "gateway": received.gateway,
                "kind": received.kind,
                "payment_id": received.payment_id,
                "order_id": received.order_id,
                "amount_cents": received.amount_cents or 0,
                "reason": received.reason or "declined",
            }
        )


@handlers.register(ApplyPaymentNotice)
def _apply_notice(cmd: ApplyPaymentNotice, uow: UnitOfWorkPort) -> str:
    """One effect per movement: what the order already shows is not done again."""
    order = uow.get(Order, cmd.order_id)
    payment = (cmd.gateway, cmd.payment_id)
    described = f"{cmd.gateway} payment {cmd.payment_id}"
    if cmd.kind == "succeeded":
        if order.paid_by == payment:
            return order.id
        if order.status != OrderStatus.PENDING:
            raise RuleViolation(
                f"order {order.id} is {order.status}, yet {described} took {cmd.amount_cents} "
                "cents for it: refund it at the gateway or settle it by hand"
            )
        order.pay(cmd.payment_id, cmd.amount_cents, gateway=cmd.gateway)
    elif cmd.kind == "failed":
        if payment not in order.failed_payments:
            order.record_payment_failure(cmd.gateway, cmd.payment_id, cmd.reason)
    else:
        if order.paid_by is None:
            raise RefundBeforePayment(
                f"order {order.id} has no payment yet for the refund of {described}; "
                "the refund is retried until its payment has been applied"
            )
        refunded = order.refunds.get(payment)
        if refunded == cmd.amount_cents:
            return order.id
        if refunded is not None:
            raise RuleViolation(
                f"{described} was refunded {refunded} cents already; another refund of "
                f"{cmd.amount_cents} cents (one per payment) needs a review"
            )
        order.refund(cmd.gateway, cmd.payment_id, cmd.amount_cents)
    return order.id


# -- reconciliation -------------------------------------------------------------------------


@event
class PaymentLedgerMismatch(DomainEvent):
    """An order whose paid or refunded total differs from the sum of its ledger entries."""

    TYPE = "payment.ledger_mismatch"
    order_id: str
    tenant_id: str
    paid_cents: int
    ledger_paid_cents: int
    refunded_cents: int
    ledger_refunded_cents: int

    def describe(self) -> str:
        return (
            f"order {self.order_id}: paid {self.paid_cents} vs ledger {self.ledger_paid_cents}, "
            f"refunded {self.refunded_cents} vs ledger {self.ledger_refunded_cents}"
        )


class PaymentReconciliation(Aggregate):
    """One per reconciliation day: the mismatches that day's runs found."""

    TYPE = "payment_reconciliation"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.found = 0

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, PaymentLedgerMismatch):
            self.found += 1

    def record(self, mismatch: PaymentLedgerMismatch) -> None:
        self._record(mismatch)


class RecordLedgerMismatches(Command):
    reconciliation_id: str = Field(min_length=1, max_length=64)
    mismatches: list[PaymentLedgerMismatch] = Field(min_length=1, max_length=500)


@handlers.register(RecordLedgerMismatches)
def _record_mismatches(cmd: RecordLedgerMismatches, uow: UnitOfWorkPort) -> str:
    try:
        run = uow.get(PaymentReconciliation, cmd.reconciliation_id)
    except NotFound:
        run = PaymentReconciliation(cmd.reconciliation_id)
        uow.add(run)
    for mismatch in cmd.mismatches:
        run.record(mismatch)
    return run.id


def ledger_mismatches(conn: Connection, *, chunk: int = 1000) -> Iterator[PaymentLedgerMismatch]:
    """Orders (in id chunks, one index range each) whose totals differ from their ledger
    sums, then ledger entries whose order does not exist."""
    o, ledger = orders, payment_ledger
    last: str | None = None
    while True:
        query = select(o.c.id, o.c.tenant_id, o.c.paid_cents, o.c.refunded_cents)
        if last is not None:
            query = query.where(o.c.id > last)
        rows = conn.execute(query.order_by(o.c.id).limit(chunk)).all()
        if not rows:
            break
        sums = _ledger_sums(conn, [row.id for row in rows])
        for row in rows:
            paid, refunded = sums.get(row.id, (0, 0))
            if (paid, refunded) != (row.paid_cents, row.refunded_cents):
                yield PaymentLedgerMismatch(
                    order_id=row.id,
                    tenant_id=row.tenant_id,
                    paid_cents=row.paid_cents,
                    ledger_paid_cents=paid,
                    refunded_cents=row.refunded_cents,
                    ledger_refunded_cents=refunded,
                )
        last = rows[-1].id
    orphans = (
        select(
            ledger.c.order_id, ledger.c.tenant_id, ledger.c.kind, func.sum(ledger.c.amount_cents)
        )
        .where(~exists().where(o.c.id == ledger.c.order_id))
        .group_by(ledger.c.order_id, ledger.c.tenant_id, ledger.c.kind)
        .order_by(ledger.c.order_id)
    )
    found: dict[tuple[str, str], list[int]] = {}
    for order_id, tenant_id, kind, total in conn.execute(orphans):
        found.setdefault((order_id, tenant_id), [0, 0])[kind == "refund"] += int(total)
    for (order_id, tenant_id), (paid, refunded) in found.items():
        yield PaymentLedgerMismatch(
            order_id=order_id,
            tenant_id=tenant_id,
            paid_cents=0,
            ledger_paid_cents=paid,
            refunded_cents=0,
            ledger_refunded_cents=refunded,
        )


def _ledger_sums(conn: Connection, order_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    ledger = payment_ledger
    query = (
        select(ledger.c.order_id, ledger.c.kind, func.sum(ledger.c.amount_cents))
        .where(ledger.c.order_id.in_(order_ids))
        .group_by(ledger.c.order_id, ledger.c.kind)
    )
    sums: dict[str, list[int]] = {}
    for order_id, kind, total in conn.execute(query):
        sums.setdefault(order_id, [0, 0])[kind == "refund"] += int(total)
    return {order_id: (paid, refunded) for order_id, (paid, refunded) in sums.items()}
