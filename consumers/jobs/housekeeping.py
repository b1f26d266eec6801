"""prune-outbox: the scheduled retention run (what `outbox prune` does, without archive or
dead rows), in short batches each its own transaction, audited as actor `scheduler`; and
the expiry of sales exports and reports past their URL (consumers/jobs/exports.py)."""

from __future__ import annotations

from datetime import timedelta

from consumers import retry_tickets
from consumers.context import OwnTransactionsContext
from consumers.job import job
from consumers.jobs.exports import expire_exports
from consumers.scheduled import ScheduledJobDue
from outbox.audit import record
from outbox.prune import plan, prune

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
def prune_outbox(event: ScheduledJobDue, ctx: OwnTransactionsContext) -> None:
    """Delete published outbox rows past PRUNE_RETENTION_S (never inside the consumers'
    de-duplication window: `plan` keeps the longer of the two), old inbox rows and finished
    batches, old retry tickets, and the files of sales exports whose URL has expired.
    Running it twice deletes nothing more the second time."""
    retention = timedelta(seconds=ctx.config.prune_retention_s)
    window = timedelta(seconds=ctx.config.dedup_window_s)
    with ctx.transaction() as conn:
        p = plan(conn, ctx.now, older_than=retention, dedup_window=window, count=False)
    result = prune(ctx.engine, p, batch_size=BATCH_SIZE)
    # Exports and reports whose download URL has expired: their files go, their rows say so.
    expired = expire_exports(ctx)
    # Retry tickets as old as the retention: their retry copies were consumed long since.
    with ctx.transaction() as conn:
        tickets = retry_tickets.prune(conn, ctx.now - max(retention, window))
    details = {
        **result.as_dict(),
        **expired,
        "retry_tickets": tickets,
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
