"""The payments group's jobs: apply each accepted payment webhook to its order, once, and the
daily reconciliation of orders against the payment ledger.

`process-payment-webhook` runs on the high lane with 5 tries and exponential back-off. A
refund that arrives before its payment fails with `RefundBeforePayment` and is retried (the
payment usually lands within minutes); a notice the business refuses (an amount that does
not match, a payment for a cancelled order) fails at once, for review, and so does a
verified webhook its gateway's mapping could not place (kind "unmapped", reason
`unmapped_event`; a retry maps its stored body again, web/unmapped.py). The group is
`review_before_retry`, so `outbox failed retry` wants --reviewed-by and --reason.

The record is only a notification: before anything moves, `verified_notice` finds the
notice's `payment_webhooks` row (written only by `outbox serve`, after the signature checked
out) and compares the record with the event accepted with it (payload digest). No row: the
job fails at once with reason `not_verified`; a record that differs from its row, or an
order of another tenant than the row's: `record_mismatch`. Nothing is written (ADR 014).

A notice that moves money in a currency other than its order's (orders without one are in
DEFAULT_CURRENCY) fails at once with reason `currency_mismatch`; one that states no currency,
or not an upper-case ISO 4217 code ("jpy", "", "XYZ"), with `unknown_currency`. Never
applied. Refunds: several per payment (each refund id once; Stripe's cumulative
`amount_refunded` gives what the ledger lacks), never more than the payment; the daily
reconciliation also checks that no order's ledger gives back more than it took.
"""

from __future__ import annotations

from sqlalchemy import select, update

from consumers import (
    DoNotRetry,
    NotVerified,
    RecordMismatch,
    ScheduledJobDue,
    add_business_key,
    exponential,
    job,
)
from domain.errors import DomainError
from domain.money import FALLBACK_CURRENCY
from domain.payments import (
    ApplyPaymentNotice,
    CurrencyMismatch,
    OrderOfAnotherTenant,
    PaymentLedgerMismatch,
    PaymentWebhookReceived,
    RecordLedgerMismatches,
    RefundBeforePayment,
    UnknownCurrency,
    UnverifiedNotice,
    ledger_mismatches,
    verified_notice,
)
from domain.schema import payment_ledger, payment_webhooks
from jobs.config import AppConfig, Context

__all__ = [
    "MISMATCHES_PER_COMMAND",
    "RefusedNotice",
    "UnmappedEvent",
    "process_payment_webhook",
    "reconcile_payments",
]

# A payment id on two orders is the same fact claimed twice: never retried as a lost race.
add_business_key(payment_ledger.name)


class RefusedNotice(DoNotRetry):
    """A notice the payments refuse for a reason of their own (its failed job's reason)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Mismatches recorded per command (one transaction each).
MISMATCHES_PER_COMMAND = 500
# How many mismatches the failed job's message names (all of them are events).
NAMED_IN_REASON = 10


@job(
    "process-payment-webhook",
    group="payments",
    on=PaymentWebhookReceived,
    tries=5,
    # 30 s, 90 s, 270 s, 810 s: a refund waits about 20 minutes for its payment.
    backoff=exponential(base_s=30, factor=3, max_s=3600),
    timeout_s=30,
    priority="high",
)
def process_payment_webhook(received: PaymentWebhookReceived, ctx: Context) -> None:
    """Apply the webhook's payment notice to its order, if the database verified it; note
    the outcome on the webhook row."""
    try:
        verified = verified_notice(ctx.connection, received)
    except UnverifiedNotice as exc:
        if exc.mismatch:
            raise RecordMismatch("the payment notice", ["payload"], str(exc)) from None
        raise NotVerified(str(exc)) from None
    if received.kind == "unmapped":
        received = _placed(received, ctx)  # or UnmappedEvent: parked for review
    refs = {
        "gateway": received.gateway,
        "webhook_id": received.webhook_id,
        "kind": received.kind,
        "order_id": received.order_id,
        "payment_id": received.payment_id,
    }
    if received.kind == "other":
        outcome = "ignored"
    else:
        try:
            notice = ApplyPaymentNotice.of(received, verified.tenant_id, _default_currency(ctx))
            result = ctx.run(notice)
        except RefundBeforePayment:
            raise  # retried with back-off: its payment is on the way
        except OrderOfAnotherTenant as exc:
            raise RecordMismatch("the payment notice", ["order"], str(exc)) from None
        except (CurrencyMismatch, UnknownCurrency) as exc:
            raise RefusedNotice(str(exc), exc.reason) from None
        except DomainError as exc:
            raise DoNotRetry(str(exc)) from exc
        outcome = "applied" if result.events else "unchanged"
    w = payment_webhooks
    ctx.connection.execute(
        update(w)
        .where(w.c.gateway == received.gateway, w.c.webhook_id == received.webhook_id)
        .values(processed_at=ctx.now, outcome=outcome)
    )
    ctx.log.info("payment_webhook_processed", outcome=outcome, **refs)


@job(
    "reconcile-payments",
    group="payments",
    on=ScheduledJobDue,
    tries=1,
    timeout_s=1800,
    transactional=False,
)
def reconcile_payments(due: ScheduledJobDue, ctx: Context) -> None:
    """Check every order's paid and refunded totals against its ledger entries.

    Each mismatch becomes a `PaymentLedgerMismatch` event (committed), then the job fails
    with them named in its reason, so they show in `outbox failed list` for review.
    """
    with ctx.transaction() as conn:
        found = list(ledger_mismatches(conn))
    if not found:
        ctx.log.info("payments_reconciled", mismatches=0)
        return
    day = due.utc_slot.date().isoformat()
    for start in range(0, len(found), MISMATCHES_PER_COMMAND):
        chunk = found[start : start + MISMATCHES_PER_COMMAND]
        ctx.run(RecordLedgerMismatches(reconciliation_id=f"reconciliation-{day}", mismatches=chunk))
    ctx.log.warning(
        "payment_ledger_mismatches", mismatches=len(found), orders=_names(found)[:NAMED_IN_REASON]
    )
    raise DoNotRetry(
        f"{len(found)} order(s) whose paid/refunded totals differ from the payment ledger "
        f"(recorded as PaymentLedgerMismatch): "
        + "; ".join(m.describe() for m in found[:NAMED_IN_REASON])
        + (" ..." if len(found) > NAMED_IN_REASON else "")
    )


def _default_currency(ctx: Context) -> str:
    # A worker always has its AppConfig; consumers.testing hands None unless given one.
    config: AppConfig | None = ctx.config
    return FALLBACK_CURRENCY if config is None else config.default_currency


def _names(found: list[PaymentLedgerMismatch]) -> list[str]:
    return [m.order_id for m in found]


class UnmappedEvent(DoNotRetry):
    """A verified webhook its gateway's mapping cannot place (kind "unmapped"): failed at
    once for review; a retry maps its stored, verified body again (a fixed mapping places it)."""

    reason = "unmapped_event"


def _placed(received: PaymentWebhookReceived, ctx: Context) -> PaymentWebhookReceived:
    """The unmapped webhook's notice as the mapping now places it, from its stored body."""
    said = f"the {received.gateway!r} webhook ({received.gateway_type!r}) is not placed"
    mapping = getattr(ctx.config, "payment_mapping", None)
    if mapping is None:
        raise UnmappedEvent(f"{said}: {received.reason}")
    w = payment_webhooks
    row = ctx.connection.execute(
        select(w.c.scheme, w.c.body).where(
            w.c.gateway == received.gateway, w.c.webhook_id == received.webhook_id
        )
    ).one()
    try:
        notice = mapping(
            received.gateway, row.scheme, row.body or "", received.webhook_id, received.sent_at
        )
    except ValueError as exc:
        raise UnmappedEvent(f"{said}: {str(exc)[:300]}") from None
    return PaymentWebhookReceived(**notice.model_dump())
