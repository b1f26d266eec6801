"""fan-out-campaign (on CampaignLaunched) and complete-campaign (the batch's `finally`).

A launched campaign may have 100,000 recipients: neither one event nor one transaction.
The coordinator opens a batch of `recipients_count` members first (one short transaction,
with a `campaign_fanouts` row naming the batch), then walks `campaign_recipients` in
keyset chunks of CHUNK addresses, each chunk in a transaction of its own that writes the
chunk's `send-campaign-email` outbox rows AND moves the fan-out's cursor past them. A
coordinator that crashes or times out midway is retried and resumes after the last chunk
that committed: nobody is dispatched twice, whatever happens between chunks.

The batch cannot finish before all its members settled (its total is known up front), so
its `finally` job, complete-campaign, runs once, after the last e-mail: it counts the
deliveries and records CampaignCompleted through the Campaign aggregate.

Both records are notifications (ADR 014): the fan-out opens only for a campaign the
database says was launched, with the record's tenant and count; the completion runs only
for a batch the database says finished.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from consumers import BatchFinished, NotVerified, job, require_match
from domain.marketing import CampaignLaunched, CampaignStatus, CompleteCampaign
from domain.schema import campaign_deliveries, campaign_fanouts, campaign_recipients, campaigns
from jobs.campaigns import SEND_JOB, CampaignEmailDue, DeliveryStatus
from jobs.config import Context
from outbox.schema import job_batches_table

__all__ = ["CHUNK", "COMPLETE_JOB", "FANOUT_JOB", "complete_campaign", "fan_out_campaign"]

FANOUT_JOB, COMPLETE_JOB = "fan-out-campaign", "complete-campaign"
CHUNK = 1000

f = campaign_fanouts
r = campaign_recipients
d = campaign_deliveries
c = campaigns
b = job_batches_table


@job(
    FANOUT_JOB,
    group="campaigns",
    on=CampaignLaunched,
    tries=5,
    backoff=(10, 60, 300, 900),
    timeout_s=900,
    transactional=False,
)
def fan_out_campaign(event: CampaignLaunched, ctx: Context) -> None:
    """Open the campaign's batch (once), then dispatch its recipients chunk by chunk."""
    campaign_id = ctx.key  # a domain event's Kafka key is its aggregate's id
    with ctx.transaction() as conn:
        _verify_launch(conn, campaign_id, event)
        _open(conn, ctx, campaign_id)
    chunks = dispatched = 0
    while True:
        with ctx.transaction() as conn:
            added = _next_chunk(conn, ctx, campaign_id)
        if added is None:
            break
        chunks, dispatched = chunks + 1, dispatched + added
    ctx.log.info(
        "campaign_fanned_out", campaign_id=campaign_id, chunks=chunks, dispatched=dispatched
    )


def _verify_launch(conn: Connection, campaign_id: str, event: CampaignLaunched) -> None:
    """The record only says which campaign (ADR 014): it must exist and have been launched
    (`campaigns.status`, written with the CampaignLaunched event), else `not_verified`; its
    tenant and recipient count must be the row's, else `record_mismatch`. Nothing is opened
    either way: a forged launch of a draft leaves no cursor for the real launch to find."""
    row = conn.execute(
        select(c.c.tenant_id, c.c.status, c.c.recipients_count).where(c.c.id == campaign_id)
    ).one_or_none()
    if row is None:
        raise NotVerified(f"campaign {campaign_id} does not exist: no fan-out was opened")
    if row.status == CampaignStatus.DRAFT:
        raise NotVerified(f"campaign {campaign_id} was never launched: no fan-out was opened")
    claims = {"tenant_id": event.tenant_id, "recipients_count": event.recipients_count}
    require_match(f"campaign {campaign_id}", claims, dict(row._mapping))


def _open(conn: Connection, ctx: Context, campaign_id: str) -> None:
    if conn.execute(select(f.c.batch_id).where(f.c.campaign_id == campaign_id)).first():
        return  # a retry, or the launch delivered again: resume from the cursor
    total = conn.execute(
        select(func.count()).select_from(r).where(r.c.campaign_id == campaign_id)
    ).scalar_one()
    batch_id = ctx.dispatcher.open_batch(
        conn, f"campaign {campaign_id}", SEND_JOB, total, finally_=COMPLETE_JOB
    )
    conn.execute(
        insert(f).values(
            campaign_id=campaign_id,
            batch_id=batch_id,
            total=total,
            dispatched=0,
            last_email=None,
            started_at=ctx.now,
            dispatched_at=ctx.now if total == 0 else None,
        )
    )
    if total == 0:  # an empty batch finishes at once and has no member to run `finally`
        ctx.run_in(
            conn, CompleteCampaign(campaign_id=campaign_id, sent=0, bounced=0, skipped=0, failed=0)
        )


def _next_chunk(conn: Connection, ctx: Context, campaign_id: str) -> int | None:
    """Dispatch the next chunk and move the cursor past it; None when all are dispatched."""
    fanout = conn.execute(
        select(f.c.batch_id, f.c.dispatched, f.c.last_email, f.c.dispatched_at)
        .where(f.c.campaign_id == campaign_id)
        .with_for_update()  # a second coordinator waits here, then sees the new cursor
    ).one()
    if fanout.dispatched_at is not None:
        return None
    query = select(r.c.email).where(r.c.campaign_id == campaign_id)
    if fanout.last_email is not None:
        query = query.where(r.c.email > fanout.last_email)
    emails = list(conn.execute(query.order_by(r.c.email).limit(CHUNK)).scalars())
    values: dict[str, Any] = {"dispatched": fanout.dispatched + len(emails)}
    if emails:
        messages = [CampaignEmailDue(campaign_id=campaign_id, email=e) for e in emails]
        ctx.dispatcher.add_to_batch(conn, fanout.batch_id, SEND_JOB, messages)
        values["last_email"] = emails[-1]
    if len(emails) < CHUNK:
        values["dispatched_at"] = ctx.now
    conn.execute(update(f).where(f.c.campaign_id == campaign_id).values(**values))
    return len(emails) if emails else None


@job(COMPLETE_JOB, group="campaigns", on=BatchFinished, tries=5, backoff=(10, 60, 300, 900))
def complete_campaign(event: BatchFinished, ctx: Context) -> None:
    """Count the campaign's deliveries and record CampaignCompleted (once)."""
    conn = ctx.connection
    fanout = conn.execute(
        select(f.c.campaign_id, f.c.total).where(f.c.batch_id == event.batch_id)
    ).one_or_none()
    if fanout is None:
        raise NotVerified(f"batch {event.batch_id} is no campaign's fan-out")
    batch = _finished_batch(conn, event)
    counts: dict[str, int] = dict(
        conn.execute(
            select(d.c.status, func.count())
            .where(d.c.campaign_id == fanout.campaign_id)
            .group_by(d.c.status)
        ).all()
    )
    sent, bounced, skipped = (
        int(counts.get(s, 0))
        for s in (DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.SKIPPED)
    )
    # Everyone else ended in failed jobs: known not delivered, or an unknown outcome.
    failed = fanout.total - sent - bounced - skipped
    ctx.run(
        CompleteCampaign(
            campaign_id=fanout.campaign_id,
            sent=sent,
            bounced=bounced,
            skipped=skipped,
            failed=failed,
        )
    )
    ctx.log.info(
        "campaign_completed",
        campaign_id=fanout.campaign_id,
        sent=sent,
        bounced=bounced,
        skipped=skipped,
        failed=failed,
        failed_jobs=batch.failed,
    )


def _finished_batch(conn: Connection, event: BatchFinished) -> Any:
    """The batch's row, which must say it finished (the member that settled last set
    `finished_at` and dispatched this job in one transaction), else `not_verified`: a
    forged early BatchFinished completes nothing. Its name, total and failed count (fixed
    once it finished) must be the record's, else `record_mismatch`."""
    batch = conn.execute(
        select(b.c.name, b.c.total, b.c.pending, b.c.failed, b.c.finished_at).where(
            b.c.id == event.batch_id
        )
    ).one_or_none()
    if batch is None:
        raise NotVerified(f"batch {event.batch_id} does not exist: the campaign is not completed")
    if batch.finished_at is None or batch.pending:
        raise NotVerified(
            f"batch {event.batch_id} has not finished ({batch.pending} of {batch.total} "
            "members pending): the campaign is not completed"
        )
    claims = {"name": event.name, "total": event.total, "failed": event.failed}
    require_match(f"batch {event.batch_id}", claims, dict(batch._mapping))
    return batch
