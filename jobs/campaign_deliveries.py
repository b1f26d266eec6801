"""The `campaign_deliveries` rows of send-campaign-email (jobs.campaigns): what is
checked before an e-mail is taken, and the taking itself (this e-mail's delivery and the
look-ahead's, in one transaction).

The record is a notification, the database is the truth (ADR 014): a delivery is taken
only for a campaign that was launched and an address that is one of its
`campaign_recipients`, compared exactly (the fan-out dispatches the stored address, already
lower-cased and in its IDNA form by CreateCampaign, byte for byte). Any other address,
including another spelling of a recipient's (case, a Unicode domain), is `record_mismatch`
and gets no delivery row: a second spelling would be a second delivery, so a second e-mail
to the same person. The check costs no statement of its own: for the e-mail an attempt
takes, an EXISTS beside the opt-out's in one SELECT; for the look-ahead's 49, the query of
the deliveries already taken became an anti-join from `campaign_recipients`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, exists, insert, select, update

from consumers import DoNotRetry, NotVerified, RecordMismatch
from domain.marketing import CampaignStatus
from domain.schema import campaign_deliveries, campaign_opt_outs, campaign_recipients, campaigns
from jobs.campaign_mail import build_one
from jobs.config import Context
from jobs.mail import mask_address

__all__ = [
    "DONE",
    "MAX_STORED",
    "DeliveryStatus",
    "finish",
    "launched_campaign",
    "not_a_recipient",
    "recipient",
    "take",
    "take_ahead",
]

MAX_STORED = 320  # campaign_deliveries.email, campaign_recipients.email

d = campaign_deliveries
c = campaigns
o = campaign_opt_outs
r = campaign_recipients


class DeliveryStatus(StrEnum):
    SENDING = "sending"
    SENT = "sent"
    BOUNCED = "bounced"
    SKIPPED = "skipped"
    FAILED = "failed"  # deferred (4xx) or no connection: not handed over, retried
    NOT_SENT = "not_sent"  # never handed over (a bad address, no message): failed at once


DONE = (DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.SKIPPED)


def launched_campaign(conn: Connection, campaign_id: str) -> Any:
    """The campaign's row; `not_verified` when it does not exist or was never launched."""
    campaign = conn.execute(select(c).where(c.c.id == campaign_id)).one_or_none()
    if campaign is None:
        raise NotVerified(f"campaign {campaign_id} does not exist: nothing was sent")
    if campaign.status == CampaignStatus.DRAFT:
        raise NotVerified(f"campaign {campaign_id} was never launched: nothing was sent")
    return campaign


def recipient(conn: Connection, campaign_id: str, email: str) -> bool:
    """Whether `email` is, exactly, one of the campaign's recipients (one indexed lookup)."""
    if len(email) > MAX_STORED or "\x00" in email:
        return False  # the table cannot hold it (PostgreSQL refuses NUL even in a query)
    found = conn.execute(
        select(r.c.email).where(r.c.campaign_id == campaign_id, r.c.email == email)
    ).first()
    return found is not None


def not_a_recipient(campaign_id: str, detail: str = "") -> RecordMismatch:
    """The failure of a record naming an address the campaign does not have: nothing is
    sent and no delivery row is written (the campaign's deliveries stay its recipients')."""
    why = "it is not one of them; nothing was sent"
    return RecordMismatch(
        f"campaign {campaign_id}'s recipients", ["email"], f"{why}{'; ' + detail if detail else ''}"
    )


def finish(conn: Connection, campaign_id: str, email: str, now: datetime, error: str) -> None:
    """A delivery not yet done recorded `not_sent` with its reason."""
    conn.execute(
        update(d)
        .where(d.c.campaign_id == campaign_id, d.c.email == email, d.c.status.not_in(DONE))
        .values(status=DeliveryStatus.NOT_SENT, finished_at=now, last_error=error)
    )


def take(conn: Connection, ctx: Context, campaign: Any, email: str) -> bool:
    """This recipient's delivery taken (`sending`): True; False: nothing to send. An address
    that is not one of the campaign's recipients: `record_mismatch`, nothing written."""
    campaign_id = campaign.id
    row = conn.execute(
        select(d.c.status, d.c.attempts, d.c.taken_at)
        .where(d.c.campaign_id == campaign_id, d.c.email == email)
        .with_for_update()
    ).one_or_none()
    if row is not None and row.status in DONE:
        return False  # a duplicate, or an operator's retry of one that ended meanwhile
    resent = ctx.retried_failed_id(conn) is not None  # an operator's `outbox failed retry`
    if row is not None and row.status == DeliveryStatus.SENDING and not resent:
        raise DoNotRetry(
            f"the campaign e-mail to {mask_address(email)} may already have gone out: an "
            f"attempt took it at {row.taken_at.isoformat()} and its outcome was never "
            "recorded (a crash between sending and recording), so it is not sent again "
            "by itself; `outbox failed retry` sends it again"
        )
    # One statement for both: whether the address is one of the campaign's recipients
    # (else nothing is written: the transaction is rolled back) and whether it opted out.
    member, opted_out = conn.execute(
        select(
            exists().where(r.c.campaign_id == campaign_id, r.c.email == email),
            exists().where(o.c.tenant_id == campaign.tenant_id, o.c.email == email.lower()),
        )
    ).one()
    if not member:
        raise not_a_recipient(campaign_id)
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
        return False
    return True


def take_ahead(
    conn: Connection,
    ctx: Context,
    campaign: Any,
    emails: list[str],
    make: Callable[[str], bytes],
) -> dict[str, bytes]:
    """Take the deliveries of the e-mails this worker sends next (`emails`, the same
    campaign's, each with a valid envelope) in this transaction too: those that are the
    campaign's recipients and were not taken before, opted-out ones recorded `skipped`;
    returns the messages to send, by address. Any other (not a recipient, a retry, a
    duplicate) is left to its own attempt, which says why."""
    if not emails:
        return {}
    fresh_rows = conn.execute(
        select(r.c.email)
        .select_from(
            r.outerjoin(d, and_(d.c.campaign_id == r.c.campaign_id, d.c.email == r.c.email))
        )
        .where(r.c.campaign_id == campaign.id, r.c.email.in_(emails), d.c.email.is_(None))
    ).scalars()
    found = set(fresh_rows)
    fresh = [e for e in emails if e in found]
    if not fresh:
        return {}
    lowered = {e.lower() for e in fresh}
    opted = set(
        conn.execute(
            select(o.c.email).where(o.c.tenant_id == campaign.tenant_id, o.c.email.in_(lowered))
        ).scalars()
    )
    messages: dict[str, bytes] = {}
    unbuilt: dict[str, str | None] = {}
    for e in fresh:
        if e.lower() not in opted:
            message, unbuilt[e] = build_one(make, e)  # one message's trouble is its own
            if message is not None:
                messages[e] = message
    conn.execute(
        insert(d),
        [
            {
                "campaign_id": campaign.id,
                "email": e,
                "status": _ahead_status(e, messages, unbuilt),
                "attempts": 1 if e in messages else 0,
                "taken_at": ctx.now,
                "finished_at": None if e in messages else ctx.now,
                "last_error": unbuilt.get(e),
            }
            for e in fresh
        ],
    )
    return messages


def _ahead_status(email: str, messages: dict[str, bytes], unbuilt: dict[str, str | None]) -> str:
    if email in messages:
        return DeliveryStatus.SENDING
    return DeliveryStatus.NOT_SENT if unbuilt.get(email) else DeliveryStatus.SKIPPED
