"""Payments: gateway webhooks accepted once, applied to orders once, checked against the ledger.

- **Accept** (`accept_webhook`, called by `outbox serve` after it verified the signature):
  one transaction writes the `payment_webhooks` row (unique per gateway and webhook id: a
  redelivery finds it and changes nothing), the `PaymentWebhookReceived` event of a new
  PaymentWebhook aggregate and its outbox row on `payment-events`.
- **Apply** (`ApplyPaymentNotice`, domain.payment_apply, run by the `process-payment-webhook`
  job): the currency must be the order's; succeeded makes the order PAID (already paid by
  this payment: no change), failed is recorded on the order, refunded gives money back (one
  refund per refund id, or what a cumulative total adds). Each movement is a ledger entry, a
  projection of the order's event, unique per (gateway, payment id, kind, refund id): one
  effect however often a notice comes. A refund whose payment has not been applied yet
  raises `RefundBeforePayment` (retried).
- **Verify** (`verified_notice`, before applying): the Kafka record is only a notification.
  A notice is applied only if its `payment_webhooks` row exists (only `outbox serve` writes
  it, after the signature checked out) and the record equals the event accepted with that row
  (same gateway and webhook id, same payload digest); the order must belong to the tenant the
  row recorded at acceptance (ADR 014).
- **Reconcile** (`ledger_mismatches`, `RecordLedgerMismatches`, domain.reconciliation): each
  order's paid and refunded totals must equal its ledger entries; each difference is recorded
  as a `PaymentLedgerMismatch`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection, exists, select
from sqlalchemy.exc import IntegrityError

from domain.aggregate import Aggregate
from domain.bus import CommandBus
from domain.commands import Command, UnitOfWorkPort, handlers
from domain.errors import DomainError
from domain.events import DomainEvent, event
from domain.payment_apply import (
    MAX_REFUNDS,
    ApplyPaymentNotice,
    Cents,
    CurrencyMismatch,
    GatewayName,
    OrderOfAnotherTenant,
    OrderRef,
    PaymentRef,
    RefundBeforePayment,
    RefundLine,
    UnknownCurrency,
    WebhookId,
)
from domain.reconciliation import (
    PaymentLedgerMismatch,
    PaymentReconciliation,
    RecordLedgerMismatches,
    ledger_mismatches,
)
from domain.schema import domain_events, orders, payment_webhooks
from domain.unit_of_work import CommandContext
from domain.write_plan import Insert, Lookup
from outbox.envelope import canonical_json
from outbox.types import utcnow

__all__ = [
    "AcceptPaymentWebhook",
    "Acceptance",
    "ApplyPaymentNotice",
    "CurrencyMismatch",
    "OrderOfAnotherTenant",
    "PaymentKind",
    "PaymentLedgerMismatch",
    "PaymentReconciliation",
    "PaymentWebhook",
    "PaymentWebhookReceived",
    "RecordLedgerMismatches",
    "RefundBeforePayment",
    "RefundLine",
    "UnknownCurrency",
    "UnverifiedNotice",
    "VerifiedNotice",
    "accept_webhook",
    "ledger_mismatches",
    "notice_digest",
    "verified_notice",
    "webhook_aggregate_id",
]

# "unmapped": verified, but the gateway's mapping could not place it (parked for review).
PaymentKind = Literal["succeeded", "failed", "refunded", "other", "unmapped"]
_NAMESPACE = uuid.UUID("6f7c2f5e-3a1b-4c55-9a57-1d0f2b9e8a41")


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
    # In the currency's minor unit (4900 JPY is 4900); the currency as the gateway sent it
    # (upper-cased for Stripe, which sends lower case), checked when applied.
    amount_cents: Cents | None = None
    currency: str | None = Field(default=None, max_length=8)
    reason: str | None = Field(default=None, max_length=200)
    # Refunds: this refund's id, or the payment's cumulative refunded total (and the refunds
    # listed with it), as Stripe's charge.refunded sends them.
    refund_id: PaymentRef | None = None
    refunded_total_cents: Cents | None = None
    refunds: tuple[RefundLine, ...] = Field(default=(), max_length=MAX_REFUNDS)
    sent_at: AwareDatetime

    @model_validator(mode="after")
    def _complete(self) -> PaymentNotice:
        if self.kind in ("other", "unmapped"):
            return self
        missing = [name for name in ("payment_id", "order_id") if getattr(self, name) is None]
        if self.kind == "succeeded" and self.amount_cents is None:
            missing.append("amount_cents")
        no_amount = self.amount_cents is None and self.refunded_total_cents is None
        if self.kind == "refunded" and no_amount:
            missing.append("amount_cents or refunded_total_cents")
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
    # Added with several refunds per payment; older events have the defaults.
    refund_id: str | None = None
    refunded_total_cents: int | None = None
    refunds: tuple[RefundLine, ...] = ()
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


def accept_webhook(
    bus: CommandBus, cmd: AcceptPaymentWebhook, context: CommandContext | None = None
) -> Acceptance:
    """The webhook row, its event and the event's outbox row, in ONE transaction (on
    PostgreSQL one statement); a webhook seen before (same gateway and id, even from a
    concurrent delivery) writes nothing.

    The row goes first: a concurrent delivery of the same webhook waits on its unique key and
    then finds it. A lost connection raises the driver's error with nothing committed, or
    with everything committed: either way the gateway's retry is then answered correctly.
    """
    notice = cmd.notice
    row_id = webhook_aggregate_id(notice.gateway, notice.webhook_id)
    row: dict[str, Any] = {
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
    # The notice carries no tenant: the order it names says whose money this is, read in the
    # INSERT itself (no round trip of its own, issue 26 item 4).
    if notice.order_id is not None:
        row["tenant_id"] = Lookup(orders, "tenant_id", "id", notice.order_id)
    webhook_row = Insert(payment_webhooks, row)
    try:
        with bus.writing() as conn:  # on PostgreSQL one statement: one round trip
            bus.run_in(conn, cmd, context or CommandContext(), first=[webhook_row])
    except IntegrityError:
        if not _webhook_exists(bus, notice.gateway, notice.webhook_id):
            raise  # another constraint: not a redelivery
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


# -- verifying a notice before it is applied ------------------------------------------------


class UnverifiedNotice(DomainError):
    """A payment notice the database did not verify: no webhook row (`mismatch` False), or
    a record that differs from the event accepted with its row (`mismatch` True)."""

    def __init__(self, message: str, *, mismatch: bool) -> None:
        super().__init__(message)
        self.mismatch = mismatch


@dataclass(frozen=True, slots=True)
class VerifiedNotice:
    webhook_row_id: str
    # The tenant of the order the notice named when it was accepted; None: unknown then.
    tenant_id: str | None


def notice_digest(received: PaymentWebhookReceived) -> str:
    """SHA-256 of the notice's canonical JSON: equal notices, equal digests."""
    text = canonical_json(received.model_dump(mode="json"))
    return hashlib.sha256(text.encode()).hexdigest()


def verified_notice(conn: Connection, received: PaymentWebhookReceived) -> VerifiedNotice:
    """The webhook row of this notice, if `outbox serve` accepted it and the record says
    exactly what was accepted; else UnverifiedNotice. Messages name no values."""
    w = payment_webhooks
    row = conn.execute(
        select(w.c.id, w.c.kind, w.c.payment_id, w.c.order_id, w.c.tenant_id).where(
            w.c.gateway == received.gateway, w.c.webhook_id == received.webhook_id
        )
    ).one_or_none()
    described = f"the payment notice ({received.gateway[:64]!r} webhook)"
    if row is None:
        raise UnverifiedNotice(
            f"{described} has no payment_webhooks row: `outbox serve` never received and "
            "verified it, so it is not applied",
            mismatch=False,
        )
    d = domain_events
    stored = conn.execute(
        select(d.c.payload)
        .where(d.c.aggregate_id == row.id, d.c.type == PaymentWebhookReceived.TYPE)
        .order_by(d.c.version)
        .limit(1)
    ).scalar()
    if stored is None:
        raise UnverifiedNotice(
            f"{described}: its webhook row has no accepted event; not applied", mismatch=False
        )
    accepted = PaymentWebhookReceived.model_validate(json.loads(stored))
    columns = (row.kind, row.payment_id, row.order_id)
    claimed = (received.kind, received.payment_id, received.order_id)
    if columns != claimed or notice_digest(accepted) != notice_digest(received):
        raise UnverifiedNotice(
            f"{described} differs from the notice accepted and verified with its webhook "
            "row (payload digest): not applied",
            mismatch=True,
        )
    return VerifiedNotice(row.id, row.tenant_id)
