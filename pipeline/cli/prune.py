"""`outbox prune`: retention without harm, in short batches, with an archive if asked."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import click

from pipeline.cli.clikit import dump_json, engine_for, guarded, out, settings, yes_option
from pipeline.cli.opskit import acted_options, actor_of, confirm, parse_duration, refuse
from pipeline.cli.replay import progress_bar

__all__ = ["prune"]


@click.command("prune")
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Retention (90s, 15m, 2h, 7d); never shorter than CONSUMER_DEDUP_WINDOW_S.",
)
@click.option("--include-dead", is_flag=True, help="Delete old dead rows too.")
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every deleted outbox row to this .jsonl.gz first (must not exist).",
)
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=10_000, show_default=True)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; change nothing.")
@yes_option
@acted_options
@guarded
def prune(  # noqa: PLR0915, PLR0917 - click passes each option; one summary per store
    older_than: str,
    include_dead: bool,
    archive: Path | None,
    batch_size: int,
    dry_run: bool,
    yes: bool,
    actor: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Delete published rows past the retention, in short batches; pending rows, rows inside
    the consumers' de-duplication window and open replays are never touched. Also deletes
    inbox rows past the window and finished job batches past the retention, and empties the
    raw body and headers of payment webhooks older than PAYMENT_WEBHOOK_RETENTION_S and the
    dashboard's chart rollups older than ROLLUP_RETENTION_S, and outbound webhooks' attempts
    and finished deliveries older than WEBHOOK_ATTEMPT_RETENTION_S."""
    from domain.privacy import prune_webhook_bodies, webhook_bodies_to_prune
    from outbound.retention import prune_webhooks, webhooks_to_prune
    from outbox.audit import record
    from outbox.prune import plan
    from outbox.prune import prune as run
    from outbox.rollups import prune_rollups, rollups_older_than
    from outbox.types import utcnow

    retention = parse_duration("--older-than", older_than)
    if retention <= timedelta(0):
        raise refuse(f"--older-than: {older_than!r} must be longer than zero")
    if archive is not None and archive.exists():
        raise refuse(f"--archive: {archive} exists; choose a new file (nothing is overwritten)")
    if archive is not None and not archive.parent.is_dir():
        raise refuse(f"--archive: the directory {archive.parent} does not exist")
    loaded = settings()
    engine = engine_for(loaded)
    now = utcnow()
    window = timedelta(seconds=loaded.consumer_dedup_window_s)
    with engine.connect() as conn:
        p = plan(conn, now, older_than=retention, dedup_window=window, include_dead=include_dead)
        webhook_cutoff = now - timedelta(seconds=loaded.payment_webhook_retention_s)
        webhook_bodies = webhook_bodies_to_prune(conn, webhook_cutoff)
        rollup_rows = rollups_older_than(conn, loaded.rollup_retention_s, now=now.timestamp())
        outbound_cutoff = now - timedelta(seconds=loaded.webhook_attempt_retention_s)
        outbound = webhooks_to_prune(conn, outbound_cutoff)
    summary = {
        "cutoff": p.cutoff,
        "retention_extended_to_dedup_window": p.retention_extended,
        "open_replays": [r.id for r in p.open_replays],
        "outbox_rows": p.outbox_rows,
        "inbox_rows": p.inbox_rows,
        "batch_rows": p.batch_rows,
        "webhook_bodies": webhook_bodies,
        "webhook_cutoff": webhook_cutoff,
        "rollup_rows": rollup_rows,
        **outbound,
        "webhook_attempts_cutoff": outbound_cutoff,
    }
    if dry_run:
        if as_json:
            dump_json({"dry_run": True, **summary})
        else:
            _print_plan(summary, "would delete")
        return
    if not as_json:
        _print_plan(summary, "will delete")
    confirm(yes, f"Delete {p.outbox_rows} outbox rows created before {p.cutoff.isoformat()}?")
    who = actor_of(actor)
    with progress_bar("pruning", p.outbox_rows, as_json) as progress:
        if archive is not None:
            with _private_gzip(archive) as fh:
                result = run(engine, p, batch_size=batch_size, archive=fh, progress=progress)
        else:
            result = run(engine, p, batch_size=batch_size, progress=progress)
    # Personal data in the raw webhooks: emptied in batches of its own (the ledger stays).
    pruned = prune_webhook_bodies(engine, webhook_cutoff, batch_size=min(batch_size, 1000))
    rollups = prune_rollups(
        engine, loaded.rollup_retention_s, now=now.timestamp(), batch_size=batch_size
    )
    outbound = prune_webhooks(engine, outbound_cutoff, batch_size=min(batch_size, 1000))
    details = {
        **result.as_dict(),
        "cutoff": p.cutoff.isoformat(),
        "archive": str(archive or ""),
        "webhook_bodies": pruned,
        "webhook_cutoff": webhook_cutoff.isoformat(),
        "rollup_rows": rollups,
        **outbound,
        "webhook_attempts_cutoff": outbound_cutoff.isoformat(),
    }
    with engine.begin() as conn:
        record(conn, at=utcnow(), actor=who, action="prune", target="outbox", reason=reason,
               details=details)  # fmt: skip
    if as_json:
        dump_json(details)
        return
    out.print(
        f"deleted {result.outbox_rows} outbox rows ({result.by_status}), {result.inbox_rows} "
        f"inbox rows, {result.batch_rows} finished batches in {result.batches} batches"
        + (f"; archived to {archive}" if archive else "")
        + f"; emptied the raw body of {pruned} payment webhooks"
        + f"; deleted {rollups} chart rollup rows older than ROLLUP_RETENTION_S"
        + f"; deleted {outbound['webhook_attempts']} webhook attempts and "
        + f"{outbound['webhook_deliveries']} finished webhook deliveries older than "
        + "WEBHOOK_ATTEMPT_RETENTION_S"
    )


@contextmanager
def _private_gzip(path: Path) -> Iterator[gzip.GzipFile]:
    """A new gzip file only its owner can read (it holds payloads: personal data), created
    with mode 0600 from the start, never over an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as fh:
        yield fh


def _print_plan(summary: dict[str, object], verb: str) -> None:
    out.print(
        f"{verb} [bold]{summary['outbox_rows']}[/bold] outbox rows created before "
        f"{summary['cutoff']}, {summary['inbox_rows']} inbox rows, "
        f"{summary['batch_rows']} finished batches, the raw body of "
        f"{summary['webhook_bodies']} payment webhooks received before "
        f"{summary['webhook_cutoff']}, "
        f"{summary['rollup_rows']} chart rollup rows older than ROLLUP_RETENTION_S, "
        f"{summary['webhook_attempts']} webhook attempts and {summary['webhook_deliveries']} "
        "finished webhook deliveries older than WEBHOOK_ATTEMPT_RETENTION_S"
    )
    if summary["retention_extended_to_dedup_window"]:
        out.print("[yellow]note:[/yellow] retention extended to CONSUMER_DEDUP_WINDOW_S")
    if summary["open_replays"]:
        out.print(f"kept: rows of open replays {summary['open_replays']}")
