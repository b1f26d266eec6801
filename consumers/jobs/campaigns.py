"""send-campaign-email: one campaign e-mail to one recipient, a member of its campaign's
fan-out batch (consumers.jobs.campaign_fanout dispatches it).

It runs outside its batch's transaction, as the reminders do, because the e-mail must not
go out before its delivery is taken nor be recorded before it went: (a) take the
`campaign_deliveries` row (campaign, address) as `sending` and commit; (b) hand the e-mail
to the SMTP server over the worker's reused connection (consumers.smtp_pool); (c) record
the outcome. A crash between (b) and (c), or a connection lost during DATA, leaves the row
`sending`: the next attempt does not send again (it may have gone out) and fails for an
operator; `outbox failed retry` sends it again.

Outcomes: 250 -> `sent`; 5xx -> `bounced` (recorded, not retried, not a failed job); 4xx or
no connection -> `failed` and the job is retried with back-off (its last attempt ends in
failed jobs); an address that opted out (campaign_opt_outs, checked when the delivery is
taken, so an opt-out during a campaign still counts) -> `skipped`, nothing sent.

Its group is `campaign-emails`, not `notifications`: a 100,000-recipient campaign must not
hold up the reminders queued behind it.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select, update

from consumers.campaign_mail import campaign_message
from consumers.context import JobContext
from consumers.errors import DoNotRetry
from consumers.headers import Headers
from consumers.job import job
from consumers.mail import mask_address
from consumers.smtp_pool import SmtpDeferred, SmtpOutcomeUnknown, SmtpRejected
from domain.events import DomainEvent, event
from domain.marketing import CampaignStatus
from domain.schema import campaign_deliveries, campaign_opt_outs, campaigns

__all__ = [
    "SEND_JOB",
    "CampaignEmailDeferred",
    "CampaignEmailDue",
    "DeliveryStatus",
    "send_campaign_email",
]

SEND_JOB = "send-campaign-email"

d = campaign_deliveries
c = campaigns
o = campaign_opt_outs


class DeliveryStatus(StrEnum):
    SENDING = "sending"
    SENT = "sent"
    BOUNCED = "bounced"
    SKIPPED = "skipped"
    FAILED = "failed"


DONE = (DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.SKIPPED)


@event
class CampaignEmailDue(DomainEvent):
    TYPE = "job.campaign_email.due"
    campaign_id: str
    email: str


class CampaignEmailDeferred(Exception):
    """The SMTP server deferred the e-mail (4xx) or could not be reached: retried. The
    message holds the server's reply with the recipient masked."""


@job(
    SEND_JOB,
    group="campaign-emails",
    on=CampaignEmailDue,
    tries=5,
    backoff=(60, 300, 900, 3600),
    timeout_s=120,
    transactional=False,
)
def send_campaign_email(event: CampaignEmailDue, ctx: JobContext) -> None:
    """Take the delivery, send the e-mail, record the outcome (see the module docstring)."""
    links = ctx.config.unsubscribe
    if links is None:
        raise DoNotRetry(
            "campaign e-mails need an unsubscribe link: set UNSUBSCRIBE_SIGNING_KEYS and "
            "UNSUBSCRIBE_BASE_URL, then `outbox failed retry` these jobs"
        )
    address = event.email
    masked = mask_address(address)
    log = ctx.log.bind(campaign_id=event.campaign_id, to=masked)
    pool = ctx.config.campaign_smtp
    with ctx.transaction() as conn:
        campaign = _take(conn, ctx, event)
        if campaign is None:
            return
        # Built before the take commits: a message that cannot be built leaves nothing taken.
        message = campaign_message(campaign, address, sender=pool.from_address, links=links)
    try:
        pool.send(message, address)
    except SmtpRejected as exc:
        _record(ctx, event, DeliveryStatus.BOUNCED, _masked(exc, address))
        log.info("campaign_email_bounced", code=exc.code)
        return
    except SmtpDeferred as exc:
        error = _masked(exc, address)
        _record(ctx, event, DeliveryStatus.FAILED, error)
        log.warning("campaign_email_deferred", code=exc.code, error=error)
        raise CampaignEmailDeferred(error) from None
    except SmtpOutcomeUnknown as exc:
        raise DoNotRetry(
            f"the campaign e-mail to {masked} may have gone out ({_masked(exc, address)}); "
            "its delivery stays `sending` and is not sent again by itself; "
            "`outbox failed retry` sends it again"
        ) from None
    _record(ctx, event, DeliveryStatus.SENT, None)
    log.info("campaign_email_sent")


def _take(conn: Connection, ctx: JobContext, event: CampaignEmailDue) -> Any | None:
    """The campaign, with this recipient's delivery taken (`sending`); None: nothing to do."""
    campaign_id, email = event.campaign_id, event.email
    campaign = conn.execute(select(c).where(c.c.id == campaign_id)).one_or_none()
    if campaign is None:
        raise DoNotRetry(f"campaign {campaign_id} does not exist")
    if campaign.status == CampaignStatus.DRAFT:
        raise DoNotRetry(f"campaign {campaign_id} was never launched")
    row = conn.execute(
        select(d.c.status, d.c.attempts, d.c.taken_at)
        .where(d.c.campaign_id == campaign_id, d.c.email == email)
        .with_for_update()
    ).one_or_none()
    if row is not None and row.status in DONE:
        return None  # a duplicate, or an operator's retry of one that ended meanwhile
    resent = Headers.FAILED_ID in ctx.headers  # an operator's `outbox failed retry`
    if row is not None and row.status == DeliveryStatus.SENDING and not resent:
        raise DoNotRetry(
            f"the campaign e-mail to {mask_address(email)} may already have gone out: an "
            f"attempt took it at {row.taken_at.isoformat()} and its outcome was never "
            "recorded (a crash between sending and recording), so it is not sent again "
            "by itself; `outbox failed retry` sends it again"
        )
    opted_out = conn.execute(
        select(o.c.email).where(o.c.tenant_id == campaign.tenant_id, o.c.email == email.lower())
    ).first()
    status = DeliveryStatus.SKIPPED if opted_out else DeliveryStatus.SENDING
    finished = ctx.now if opted_out else None
    if row is None:
        conn.execute(
            insert(d).values(
                campaign_id=campaign_id,
                email=email,
                status=status,
                attempts=0 if opted_out else 1,
                taken_at=ctx.now,
                finished_at=finished,
            )
        )
    else:
        taken = conn.execute(
            update(d)
            .where(d.c.campaign_id == campaign_id, d.c.email == email, d.c.status == row.status)
            .values(
                status=status,
                attempts=row.attempts + (0 if opted_out else 1),
                taken_at=ctx.now,
                finished_at=finished,
            )
        )
        if not taken.rowcount:
            raise RuntimeError(f"the campaign e-mail to {mask_address(email)} was taken meanwhile")
    if opted_out:
        ctx.log.info("campaign_email_skipped", campaign_id=campaign_id, to=mask_address(email))
        return None
    return campaign


def _record(
    ctx: JobContext, event: CampaignEmailDue, status: DeliveryStatus, error: str | None
) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": ctx.now}
    if error is not None:
        values["last_error"] = error
    with ctx.transaction() as conn:
        conn.execute(
            update(d)
            .where(d.c.campaign_id == event.campaign_id, d.c.email == event.email)
            .values(**values)
        )


def _masked(exc: Exception, address: str) -> str:
    """The error's text with the address masked (servers echo it: `550 <bob@x>: no such
    user`), at most 1,000 characters."""
    text = f"{type(exc).__name__}: {exc}"
    return re.sub(re.escape(address), mask_address(address), text, flags=re.IGNORECASE)[:1000]
