"""send-order-notification (group `notifications`, topic order-events): the customer hears
once when an order is placed, paid, cancelled or refunded, on each channel its tenant
chose (`tenants.notification_channels`): an e-mail through the mailer, an SMS through
`ctx.config.sms` when the order has a phone. Transactional messages: no unsubscribe link.

The record is a notification, the database is the truth (ADR 014): the event is read back
from `domain_events` by its id (none: `not_verified`; another order or type:
`record_mismatch`), and the address, phone, tenant name and channels from `orders` and
`tenants`, never from the record. An event older than `notification_max_age_s` (a group
that starts reading order-events from their beginning) is skipped: nobody wants last
year's "order placed".

Once per (order, status, channel) whatever the redeliveries: jobs/notification_claims.py.
The job opens its own short transactions (`transactional=False`): claims committed before
anything is sent. One channel's trouble is its own: a refused SMS (a 4xx) does not stop the
e-mail; an unavailable channel (5xx, 429, timeout, SMTP down) retries the job, which finds
the channels already sent and sends only the rest.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from smtplib import SMTPException
from typing import Any

from sqlalchemy import Connection, select

from consumers import DoNotRetry, NotVerified, RecordMismatch, job
from domain.events import DomainEvent
from domain.ordering import OrderCancelled, OrderPaid, OrderPlaced, OrderRefunded
from domain.phones import is_e164, mask_phone
from domain.schema import domain_events, order_notifications, orders, tenants
from jobs.config import Context
from jobs.mail import envelope_problem, mask_address, masked_error
from jobs.notification_claims import Claim, State, claim, record
from jobs.sms import SmsRefused, SmsUnavailable

__all__ = [
    "STATUS_OF",
    "NotificationNotSent",
    "NotificationRefused",
    "order_email",
    "order_sms",
    "send_order_notification",
]

# The status a customer hears of, per event type (stored in order_notifications.status).
STATUS_OF = {
    OrderPlaced.TYPE: "placed",
    OrderPaid.TYPE: "paid",
    OrderCancelled.TYPE: "cancelled",
    OrderRefunded.TYPE: "refunded",
}
_NO_FOLDING = SMTP.clone(max_line_length=998)


class NotificationNotSent(Exception):
    """A channel was unavailable (SMTP down, the SMS API's 5xx, 429 or timeout): retried."""


class NotificationRefused(DoNotRetry):
    """A channel's message was refused for good (the SMS API's 4xx, an address that cannot
    go into an envelope), or its outcome is unknown: failed at once, for an operator."""

    reason = "notification_refused"


@job(
    "send-order-notification",
    group="notifications",
    on=(OrderPlaced, OrderPaid, OrderCancelled, OrderRefunded),
    tries=5,
    backoff=(30, 120, 600, 1800),
    timeout_s=120,
    transactional=False,
)
def send_order_notification(event: DomainEvent, ctx: Context) -> None:
    """Claim each channel's message, send it, record it (see the module docstring)."""
    status = STATUS_OF[event.TYPE]
    order_id = ctx.key
    log = ctx.log.bind(order_id=order_id, status=status)
    with ctx.transaction() as conn:
        found = _verified(conn, ctx, event)
        if found is None:
            return
        order, tenant = found
        wanted = _channels(order, tenant, ctx, log)
        resent = bool(wanted) and ctx.retried_failed_id(conn) is not None
        claims = {
            channel: claim(
                conn,
                order_notifications,
                _key(order_id, status, channel),
                tenant_id=order.tenant_id,
                now=ctx.now,
                resent=resent,
            )
            for channel in wanted
        }
    refused: list[str] = []
    unavailable: list[str] = []
    for channel, claimed in claims.items():
        if claimed == Claim.TAKEN:
            outcome = _send(ctx, channel, order, tenant, status)
            if outcome == State.FAILED:
                unavailable.append(channel)
            elif outcome == State.REFUSED:
                refused.append(channel)
        elif claimed in (Claim.REFUSED, Claim.UNKNOWN):
            refused.append(f"{channel} ({claimed})")
    if unavailable:
        raise NotificationNotSent(
            f"order {order_id} ({status}): {', '.join(unavailable)} not sent this time "
            "(see order_notifications.last_error); tried again"
        )
    if refused:
        raise NotificationRefused(
            f"order {order_id} ({status}): {', '.join(refused)} not sent: refused for good, or "
            "claimed before with its outcome never recorded (it may have gone out); "
            "order_notifications.last_error says which; `outbox failed retry` sends it again"
        )


def _verified(conn: Connection, ctx: Context, event: DomainEvent) -> tuple[Any, Any] | None:
    """The order and its tenant, after the record's claims were checked against the event
    store; None: too old to notify."""
    e = domain_events
    stored = conn.execute(
        select(e.c.aggregate_id, e.c.type, e.c.occurred_at).where(e.c.event_id == ctx.event_id)
    ).one_or_none()
    if stored is None:
        raise NotVerified(f"event {ctx.event_id} is not in the event store: nothing was sent")
    differ = [
        name
        for name, claimed, truth in (
            ("key", ctx.key, stored.aggregate_id),
            ("type", event.TYPE, stored.type),
        )
        if claimed != truth
    ]
    if differ:
        raise RecordMismatch(f"event {ctx.event_id}", differ, "nothing was sent")
    order = conn.execute(select(orders).where(orders.c.id == ctx.key)).one_or_none()
    if order is None:
        raise NotVerified(f"order {ctx.key} has no row (projection behind?): nothing was sent")
    if ctx.tenant_id is not None and ctx.tenant_id != order.tenant_id:
        raise RecordMismatch(f"order {ctx.key}", ["tenant_id"], "nothing was sent")
    age_s = (ctx.now - stored.occurred_at).total_seconds()
    if age_s > ctx.config.notification_max_age_s:
        ctx.log.info("order_notification_skipped", order_id=ctx.key, reason="too_old")
        return None
    tenant = conn.execute(
        select(tenants.c.name, tenants.c.notification_channels).where(
            tenants.c.id == order.tenant_id
        )
    ).one()
    return order, tenant


def _channels(order: Any, tenant: Any, ctx: Context, log: Any) -> list[str]:
    chosen = set(str(tenant.notification_channels or "email").split(","))
    wanted: list[str] = [c for c in ("email", "sms") if c in chosen]
    if "sms" in wanted:
        skip = None
        if not is_e164(order.customer_phone):
            skip = "no_phone"  # none given, or erased (a pseudonym)
        elif ctx.config.sms is None:
            skip = "no_sms_provider"
        if skip:
            wanted.remove("sms")
            log.info("order_notification_skipped", channel="sms", reason=skip)
    return wanted


def _send(ctx: Context, channel: str, order: Any, tenant: Any, status: str) -> State:
    """Send one claimed message and record its outcome (committed); the outcome."""
    key = _key(order.id, status, channel)
    log = ctx.log.bind(order_id=order.id, status=status, channel=channel)
    message_id: str | None = None
    error: str | None = None
    if channel == "email":
        state, error, to = _send_email(ctx, order, tenant, status)
    else:
        to = mask_phone(order.customer_phone)
        try:
            sms = ctx.config.sms
            assert sms is not None  # noqa: S101 - _channels left sms out without one
            message_id = sms.send(order.customer_phone, order_sms(order, tenant.name, status))
            state = State.SENT
        except SmsRefused as exc:
            state, error = State.REFUSED, str(exc)
        except SmsUnavailable as exc:
            state, error = State.FAILED, str(exc)
    with ctx.transaction() as conn:
        record(conn, order_notifications, key, state, ctx.now, message_id=message_id, error=error)
    if state == State.SENT:
        log.info("order_notification_sent", to=to)
    else:
        log.warning("order_notification_not_sent", to=to, outcome=str(state), error=error)
    return state


def _send_email(
    ctx: Context, order: Any, tenant: Any, status: str
) -> tuple[State, str | None, str]:
    address = order.customer_email
    to = mask_address(address)
    if problem := envelope_problem(address):
        return State.REFUSED, f"its address {problem}", to
    sender = ctx.config.mailer.from_address
    try:
        message = order_email(order, tenant.name, status, sender=sender)
    except Exception as exc:  # e.g. a tenant name the email package refuses in a header
        return State.REFUSED, f"its message could not be built: {masked_error(exc, address)}", to
    try:
        ctx.config.mailer.send(message)
    except (SMTPException, OSError) as exc:
        return State.FAILED, masked_error(exc, address), to
    return State.SENT, None, to


def _key(order_id: str, status: str, channel: str) -> dict[str, str]:
    return {"order_id": order_id, "status": status, "channel": channel}


def order_email(order: Any, shop: str, status: str, *, sender: str) -> EmailMessage:
    """The e-mail of one status; its Message-ID is built from the order and status, so a
    copy sent twice (an operator's retry) is recognisably the same message."""
    message = EmailMessage(policy=_NO_FOLDING)
    message["From"] = sender
    message["To"] = order.customer_email
    message["Subject"] = f"{shop}: your order {order.id} was {status}"
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<order.{order.id}.{status}@{domain}>"
    message.set_content(
        f"Hello,\n\nyour order {order.id} at {shop} was {status}.\n\n"
        "This message was sent because of your order; you need not answer it.\n"
    )
    return message


def order_sms(order: Any, shop: str, status: str) -> str:
    return f"{shop[:60]}: your order {order.id} was {status}."
