"""prune-outbox: the scheduled retention run (what `outbox prune` does, without archive or
dead rows, personal data in old payment webhooks included), in short batches each its own
transaction, audited as actor `scheduler`; and the expiry of sales exports and reports past
their URL (jobs/exports.py)."""

from __future__ import annotations

from datetime import timedelta

from consumers import ScheduledJobDue, job, retry_tickets
from domain.privacy import prune_webhook_bodies
from jobs.config import OwnContext
from jobs.exports import expire_exports
from outbound.retention import prune_webhooks
from outbox.audit import record
from outbox.prune import plan, prune
from outbox.rollups import prune_rollups

__all__ = ["BATCH_SIZE", "prune_outbox"]

# The CLI's default: a writer never waits for more than one such batch.
BATCH_SIZE = 10_000


@job(
    "prune-outbox",
    group="maintenance",
    on=ScheduledJobDue,
    tries=3,
    backoff=(300, 900),
    timeout_s=3600,
    transactional=False,
)
def prune_outbox(event: ScheduledJobDue, ctx: OwnContext) -> None:
    """Delete published outbox rows past PRUNE_RETENTION_S (never inside the consumers'
    de-duplication window: `plan` keeps the longer of the two), old inbox rows and finished
    batches, old retry tickets, the raw bodies and headers of payment webhooks past
    PAYMENT_WEBHOOK_RETENTION_S, the dashboard's rollups past ROLLUP_RETENTION_S, outbound
    webhooks' attempts and finished deliveries past WEBHOOK_ATTEMPT_RETENTION_S, and the
    files of sales exports whose URL has expired.
    Running it twice deletes nothing more the second time."""
    retention = timedelta(seconds=ctx.config.prune_retention_s)
    window = timedelta(seconds=ctx.config.dedup_window_s)
    with ctx.transaction() as conn:
        p = plan(conn, ctx.now, older_than=retention, dedup_window=window, count=False)
    result = prune(ctx.engine, p, batch_size=BATCH_SIZE)
    webhook_cutoff = ctx.now - timedelta(seconds=ctx.config.payment_webhook_retention_s)
    webhook_bodies = prune_webhook_bodies(ctx.engine, webhook_cutoff)
    rollups = prune_rollups(
        ctx.engine, ctx.config.rollup_retention_s, now=ctx.now.timestamp(), batch_size=BATCH_SIZE
    )
    # Outbound webhooks: attempts and finished deliveries past WEBHOOK_ATTEMPT_RETENTION_S.
    outbound_cutoff = ctx.now - timedelta(seconds=ctx.config.webhooks.attempt_retention_s)
    outbound = prune_webhooks(ctx.engine, outbound_cutoff)
    # Exports and reports whose download URL has expired: their files go, their rows say so.
    expired = expire_exports(ctx)
    # Retry tickets as old as the retention: their retry copies were consumed long since.
    with ctx.transaction() as conn:
        tickets = retry_tickets.prune(conn, ctx.now - max(retention, window))
    details = {
        **result.as_dict(),
        **expired,
        "retry_tickets": tickets,
        "rollup_rows": rollups,
        **outbound,
        "webhook_bodies": webhook_bodies,
        "cutoff": p.cutoff.isoformat(),
        "retention_extended_to_dedup_window": p.retention_extended,
        "open_replays": [r.id for r in p.open_replays],
        "slot": event.slot.isoformat(),
    }
    with ctx.transaction() as conn:
        record(
            conn,
            at=ctx.now,
            actor="scheduler",
            action="prune",
            target="outbox",
            reason=f"scheduled prune-outbox ({'manual' if event.manual else 'slot'})",
            details=details,
        )
    ctx.log.info("outbox_pruned", **details)
