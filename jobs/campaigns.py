"""send-campaign-email: one campaign e-mail to one recipient, a member of its campaign's
fan-out batch (jobs.campaign_fanout dispatches it).

It runs outside its batch's transaction, as the reminders do, because the e-mail must not
go out before its delivery is taken nor be recorded before it went: (a) take the
`campaign_deliveries` row (campaign, address) as `sending` and commit; (b) hand the e-mail
to the SMTP server over the worker's reused connection (jobs.smtp_pool); (c) record
the outcome. A crash between (b) and (c), or a connection lost during DATA, leaves the row
`sending`: the next attempt does not send again (it may have gone out) and fails for an
operator; `outbox failed retry` sends it again.

Outcomes: 250 -> `sent`; 5xx -> `bounced` (recorded, not retried, not a failed job); 4xx or
no connection -> `failed` and the job is retried with back-off (its last attempt ends in
failed jobs); an address that opted out (campaign_opt_outs, checked when the delivery is
taken, so an opt-out during a campaign still counts) -> `skipped`, nothing sent; an address
that cannot go into an SMTP envelope (not ASCII, a CR or LF: a record that never went
through CreateCampaign) or a message that cannot be built -> `not_sent` with the reason, and
the job fails at once (DoNotRetry): nothing went out, so `outbox failed retry` may send it
again once the cause is fixed. `failed` and `not_sent` both mean "known not handed over";
only `sending` means "may have gone out".

The record only says which delivery to take (ADR 014): the campaign must be launched
(else `not_verified`) and the address one of its `campaign_recipients`, exactly as stored
(else `record_mismatch`, also for an address with no valid envelope): nothing is sent and
no delivery row written (jobs.campaign_deliveries).

One recipient's trouble stays its own: a look-ahead message that cannot be built is recorded
`not_sent`, the others are sent; the pool resets a connection whose transaction did not end.

Its group is `campaign-emails`, not `notifications`: a 100,000-recipient campaign must not
hold up the reminders queued behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import Connection, bindparam, insert, select, update

from consumers import DoNotRetry, job
from domain.events import DomainEvent, event
from domain.schema import campaign_deliveries
from jobs.campaign_deliveries import (
    DeliveryStatus,
    finish,
    launched_campaign,
    not_a_recipient,
    recipient,
    take,
    take_ahead,
)
from jobs.campaign_mail import build_one, message_maker
from jobs.config import Context
from jobs.mail import envelope_problem, mask_address, masked_error
from jobs.smtp_pool import SmtpAddressRefused, SmtpDeferred, SmtpOutcomeUnknown, SmtpRejected

__all__ = [
    "SEND_JOB",
    "CampaignEmailDeferred",
    "CampaignEmailDue",
    "DeliveryStatus",
    "send_campaign_email",
]

SEND_JOB = "send-campaign-email"
# Deliveries taken per transaction: this e-mail's and the next 49 the worker sends.
LOOKAHEAD = 49

d = campaign_deliveries


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
    lookahead=LOOKAHEAD,
)
def send_campaign_email(event: CampaignEmailDue, ctx: Context) -> None:
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
    if problem := envelope_problem(address):
        _not_sent(ctx, event, f"its address {problem}")
    message = _reserved.pop(event.campaign_id, address)
    if message is None:
        message = _take_and_build(ctx, event, pool.from_address, links)
        if message is None:
            return
    try:
        pool.send(message, address)
    except SmtpAddressRefused as exc:  # not reached: checked above; the pool checks too
        _not_sent(ctx, event, masked_error(exc, address))
    except SmtpRejected as exc:
        _record_when_done(ctx, event, DeliveryStatus.BOUNCED, masked_error(exc, address))
        log.info("campaign_email_bounced", code=exc.code)
        return
    except SmtpDeferred as exc:
        error = masked_error(exc, address)
        _record_when_done(ctx, event, DeliveryStatus.FAILED, error)
        log.warning("campaign_email_deferred", code=exc.code, error=error)
        raise CampaignEmailDeferred(error) from None
    except SmtpOutcomeUnknown as exc:
        raise DoNotRetry(
            f"the campaign e-mail to {masked} may have gone out ({masked_error(exc, address)}); "
            "its delivery stays `sending` and is not sent again by itself; "
            "`outbox failed retry` sends it again"
        ) from None
    except BaseException:  # its time limit (JobTimeout) inside the pool
        if not pool.reached_data():  # cut short before DATA: known not handed over
            _record_when_done(ctx, event, DeliveryStatus.FAILED, "cut short before DATA")
        raise
    _record_when_done(ctx, event, DeliveryStatus.SENT, None)
    log.debug("campaign_email_sent")  # job_handled says it too, at info


def _take_and_build(ctx: Context, event: CampaignEmailDue, sender: str, links: Any) -> bytes | None:
    """Take this delivery and the look-ahead's in one transaction; this one's message, or
    None (nothing to send). A message that cannot be built is recorded with the take."""
    address, unbuilt, message = event.email, None, None
    with ctx.transaction() as conn:
        campaign = launched_campaign(conn, event.campaign_id)
        make = _maker(campaign, sender, links)
        if take(conn, ctx, campaign, address):
            message, unbuilt = build_one(make, address)
            if unbuilt is not None:
                finish(conn, event.campaign_id, address, ctx.now, unbuilt)
        ahead = take_ahead(conn, ctx, campaign, _upcoming(ctx, campaign.id), make)
    _reserved.add(event.campaign_id, ahead)
    if unbuilt is not None:
        masked = mask_address(address)
        raise DoNotRetry(f"the campaign e-mail to {masked} was not sent: {unbuilt}")
    return message


def _upcoming(ctx: Context, campaign_id: str) -> list[str]:
    """The addresses of the same campaign's e-mails this worker sends next, in order; one
    whose address cannot go into an envelope is left to its own attempt, which says why."""
    return list(
        dict.fromkeys(
            e.email
            for e in ctx.upcoming
            if isinstance(e, CampaignEmailDue)
            and e.campaign_id == campaign_id
            and envelope_problem(e.email) is None
        )
    )


def _maker(campaign: Any, sender: str, links: Any) -> Callable[[str], bytes]:
    """The campaign's message maker; a campaign whose message cannot be built at all (a
    subject with a line break, stored before commands refused them) fails for good."""
    try:
        return message_maker(campaign, sender=sender, links=links)
    except Exception as exc:  # the email package refuses it: ValueError, HeaderParseError
        raise DoNotRetry(
            f"campaign {campaign.id}'s e-mail cannot be built ({type(exc).__name__}: {exc}); "
            "nothing was sent: correct its subject or name, then `outbox failed retry`"
        ) from None


def _not_sent(ctx: Context, event: CampaignEmailDue, reason: str) -> NoReturn:
    """Record the delivery `not_sent` (nothing went out) and fail the job at once. An address
    that is not one of the campaign's recipients (a forged record; among them any the table
    cannot hold: over 320 characters, a NUL) gets no row: `record_mismatch`, with the reason."""
    email, campaign_id = event.email, event.campaign_id
    with ctx.transaction() as conn:
        if not recipient(conn, campaign_id, email):
            raise not_a_recipient(campaign_id, reason)
        found = conn.execute(
            select(d.c.status)
            .where(d.c.campaign_id == campaign_id, d.c.email == email)
            .with_for_update()
        ).one_or_none()
        if found is None:
            conn.execute(
                insert(d).values(
                    campaign_id=campaign_id,
                    email=email,
                    status=DeliveryStatus.NOT_SENT,
                    attempts=0,
                    taken_at=ctx.now,
                    finished_at=ctx.now,
                    last_error=reason,
                )
            )
        else:
            finish(conn, campaign_id, email, ctx.now, reason)
    ctx.log.warning("campaign_email_not_sent", campaign_id=campaign_id, error=reason)
    raise DoNotRetry(
        f"the campaign e-mail to {mask_address(email)} was not sent: {reason}; nothing went out"
    )


class _Reserved:
    """E-mails whose deliveries this process took ahead, waiting for their own attempts.
    An entry is taken out once (under the lock): one attempt sends it. One left here when
    its attempt runs in another process (this one crashed or timed out) is `sending` there:
    not sent again by itself, as after any crash."""

    def __init__(self) -> None:
        self._messages: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def add(self, campaign_id: str, messages: dict[str, bytes]) -> None:
        with self._lock:
            self._messages.update({(campaign_id, e): m for e, m in messages.items()})

    def pop(self, campaign_id: str, email: str) -> bytes | None:
        with self._lock:
            return self._messages.pop((campaign_id, email), None)


_reserved = _Reserved()


def _record_when_done(
    ctx: Context, event: CampaignEmailDue, status: DeliveryStatus, error: str | None
) -> None:
    """The outcome, written with the attempt's own record (inbox row or retry), in one
    statement and commit for the worker's round of e-mails: a crash before it leaves the
    delivery `sending`, so the e-mail is not sent again by itself."""
    ctx.when_recorded(_record, (event.campaign_id, event.email, status, ctx.now, error))


_RECORD = (
    update(d)
    .where(d.c.campaign_id == bindparam("b_campaign"), d.c.email == bindparam("b_email"))
    .values(status=bindparam("b_status"), finished_at=bindparam("b_at"))
)


def _record(conn: Connection, outcomes: list[tuple[str, str, str, datetime, str | None]]) -> None:
    """The outcomes of a round of e-mails: one executemany per kind (an error or not)."""
    for with_error in (False, True):
        rows = [
            {"b_campaign": c_, "b_email": e, "b_status": s, "b_at": at, "b_error": err}
            for c_, e, s, at, err in outcomes
            if (err is not None) == with_error
        ]
        if rows:
            stmt = _RECORD.values(last_error=bindparam("b_error")) if with_error else _RECORD
            conn.execute(stmt, rows)
