"""The payments group's jobs: apply each accepted payment webhook to its order, once, and the
daily reconciliation of orders against the payment ledger.

`process-payment-webhook` runs on the high lane with 5 tries and exponential back-off. A
refund that arrives before its payment fails with `RefundBeforePayment` and is retried (the
payment usually lands within minutes); a notice the business refuses (an amount that does
not match, a payment for a cancelled order) fails at once, for review: the payments group is
`review_before_retry`, so `outbox failed retry` wants --reviewed-by and --reason.

The record is only a notification: before anything moves, `verified_notice` finds the
notice's `payment_webhooks` row (written only by `outbox serve`, after the signature checked
out) and compares the record with the event accepted with it (payload digest). No row: the
job fails at once with reason `not_verified`; a record that differs from its row, or an
order of another tenant than the row's: `record_mismatch`. Nothing is written (ADR 014).
"""

from __future__ import annotations

from sqlalchemy import update

from consumers.context import JobContext
from consumers.errors import DoNotRetry
from consumers.job import exponential, job
from consumers.scheduled import ScheduledJobDue
from consumers.trust import NotVerified, RecordMismatch
from domain.errors import DomainError
from domain.payments import (
    ApplyPaymentNotice,
    OrderOfAnotherTenant,
    PaymentLedgerMismatch,
    PaymentWebhookReceived,
    RecordLedgerMismatches,
    RefundBeforePayment,
    UnverifiedNotice,
    ledger_mismatches,
    verified_notice,
)
from domain.schema import payment_webhooks

__all__ = ["MISMATCHES_PER_COMMAND", "process_payment_webhook", "reconcile_payments"]

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
def process_payment_webhook(received: PaymentWebhookReceived, ctx: JobContext) -> None:
    """Apply the webhook's payment notice to its order, if the database verified it; note
    the outcome on the webhook row."""
    try:
        verified = verified_notice(ctx.connection, received)
    except UnverifiedNotice as exc:
        if exc.mismatch:
            raise RecordMismatch("the payment notice", ["payload"], str(exc)) from None
        raise NotVerified(str(exc)) from None
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
            result = ctx.run(ApplyPaymentNotice.of(received, verified.tenant_id))
        except RefundBeforePayment:
            raise  # retried with back-off: its payment is on the way
        except OrderOfAnotherTenant as exc:
            raise RecordMismatch("the payment notice", ["order"], str(exc)) from None
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
def reconcile_payments(due: ScheduledJobDue, ctx: JobContext) -> None:
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


def _names(found: list[PaymentLedgerMismatch]) -> list[str]:
    return [m.order_id for m in found]
