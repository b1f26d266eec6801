"""send-endpoint-health-email (group `notifications`, topic webhook-events): when the
breaker pauses a tenant's webhook endpoint, or it is disabled (outbound/events.py), the
tenant's contact gets one e-mail naming the endpoint and the reason.

The record is a notification, the database is the truth (ADR 014): the endpoint is read
from `webhook_endpoints` (none: `not_verified`; the record names another tenant:
`record_mismatch`), the reason from its row when it has one (`disabled_reason`), the
address from `tenants.contact_email`. Once per event id: `endpoint_notifications`, claimed
before the e-mail is sent and recorded after (jobs/notification_claims.py).
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from smtplib import SMTPException

from sqlalchemy import select

from consumers import DoNotRetry, NotVerified, RecordMismatch, job
from domain.events import DomainEvent
from domain.schema import endpoint_notifications, tenants
from jobs.config import Context
from jobs.mail import envelope_problem, mask_address, masked_error
from jobs.notification_claims import Claim, State, claim, record
from outbound.events import WebhookEndpointDisabled, WebhookEndpointPaused
from outbox.schema_webhooks import webhook_endpoints_table

__all__ = ["EndpointEmailNotSent", "endpoint_email", "send_endpoint_health_email"]

_NO_FOLDING = SMTP.clone(max_line_length=998)
e = webhook_endpoints_table


class EndpointEmailNotSent(Exception):
    """The SMTP server did not take the e-mail (retried); the address masked."""


@job(
    "send-endpoint-health-email",
    group="notifications",
    on=(WebhookEndpointPaused, WebhookEndpointDisabled),
    tries=5,
    backoff=(30, 120, 600, 1800),
    timeout_s=120,
    transactional=False,
)
def send_endpoint_health_email(event: DomainEvent, ctx: Context) -> None:
    """Claim, send, record (see the module docstring)."""
    if not isinstance(event, WebhookEndpointPaused | WebhookEndpointDisabled):
        raise DoNotRetry(f"{event.TYPE} is not an endpoint's health event")  # never declared
    key = {"event_id": ctx.event_id}
    with ctx.transaction() as conn:
        endpoint = conn.execute(
            select(e.c.id, e.c.tenant_id, e.c.disabled_reason).where(e.c.id == event.endpoint_id)
        ).one_or_none()
        if endpoint is None:
            raise NotVerified(f"endpoint {event.endpoint_id} does not exist: nothing was sent")
        if endpoint.tenant_id != event.tenant_id or ctx.key != event.endpoint_id:
            raise RecordMismatch(f"endpoint {event.endpoint_id}", ["tenant_id"], "nothing sent")
        tenant = conn.execute(
            select(tenants.c.name, tenants.c.contact_email).where(
                tenants.c.id == endpoint.tenant_id
            )
        ).one()
        claimed = claim(
            conn,
            endpoint_notifications,
            key,
            tenant_id=endpoint.tenant_id,
            now=ctx.now,
            resent=ctx.retried_failed_id(conn) is not None,
            extra={"endpoint_id": endpoint.id},
        )
    if claimed == Claim.SENT:
        return
    if claimed != Claim.TAKEN:
        raise DoNotRetry(
            f"the e-mail of event {ctx.event_id} (endpoint {endpoint.id}) was {claimed} "
            "before; `outbox failed retry` sends it again"
        )
    reason = _reason(event, endpoint.disabled_reason)
    address = tenant.contact_email
    state, error = _send(
        ctx, address=address, shop=tenant.name, endpoint_id=endpoint.id, event=event, reason=reason
    )
    with ctx.transaction() as conn:
        record(conn, endpoint_notifications, key, state, ctx.now, error=error)
    log = ctx.log.bind(endpoint_id=endpoint.id, to=mask_address(address))
    if state == State.SENT:
        log.info("endpoint_health_email_sent", kind=event.TYPE)
        return
    log.warning("endpoint_health_email_not_sent", error=error)
    if state == State.REFUSED:
        raise DoNotRetry(f"the e-mail of endpoint {endpoint.id} cannot be sent: {error}")
    raise EndpointEmailNotSent(error)


def _reason(event: WebhookEndpointPaused | WebhookEndpointDisabled, stored: str | None) -> str:
    if isinstance(event, WebhookEndpointDisabled):
        return (stored or event.reason)[:500]
    return f"{event.failures} failures in a row; deliveries wait until {_when(event.until)}"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _send(
    ctx: Context,
    *,
    address: str,
    shop: str,
    endpoint_id: str,
    event: WebhookEndpointPaused | WebhookEndpointDisabled,
    reason: str,
) -> tuple[State, str | None]:
    if problem := envelope_problem(address):
        return State.REFUSED, f"its address {problem}"
    try:
        message = endpoint_email(
            address,
            shop,
            endpoint_id,
            event,
            reason,
            sender=ctx.config.mailer.from_address,
            event_id=ctx.event_id,
        )
    except Exception as exc:  # the email package refuses a header (a name with a newline)
        return State.REFUSED, f"its message could not be built: {masked_error(exc, address)}"
    try:
        ctx.config.mailer.send(message)
    except (SMTPException, OSError) as exc:
        return State.FAILED, masked_error(exc, address)
    return State.SENT, None


def endpoint_email(
    address: str,
    shop: str,
    endpoint_id: str,
    event: WebhookEndpointPaused | WebhookEndpointDisabled,
    reason: str,
    *,
    sender: str,
    event_id: str,
) -> EmailMessage:
    """The e-mail of one endpoint event; its Message-ID is built from the event id, so a
    copy sent twice (an operator's retry) is recognisably the same message."""
    what = "paused" if isinstance(event, WebhookEndpointPaused) else "disabled"
    message = EmailMessage(policy=_NO_FOLDING)
    message["From"] = sender
    message["To"] = address
    message["Subject"] = f"{shop}: webhook endpoint {endpoint_id} was {what}"
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<endpoint-health.{event_id}@{domain}>"
    again = (
        "Deliveries wait and resume by themselves; nothing is dropped."
        if what == "paused"
        else "Its pending deliveries were cancelled. Once the receiver works again, enable "
        "it (`outbox webhooks endpoints enable`) and recover the failed deliveries."
    )
    message.set_content(
        f"Hello,\n\nyour webhook endpoint {endpoint_id} was {what}.\n\nReason: {reason}\n\n"
        f"{again}\n"
    )
    return message
