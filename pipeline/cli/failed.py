"""`outbox failed list|show|retry|forget|flush`: the failed jobs of the consumer groups.

`flush --older-than 72h` is the housekeeping of failed jobs: durations need their unit (a
bare `72` is refused, it would read as seconds), `--dry-run` shows what would go, every
deletion is audited, and the failed jobs of groups that move money are kept unless
`--include-reviewed --reason`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from infra.logs import redact_text, redact_value
from pipeline.cli.clikit import (
    EXIT_USAGE,
    ID,
    MAX_ID,
    NAME,
    CliExit,
    TextType,
    cell,
    dump_json,
    engine_for,
    err,
    guarded,
    json_option,
    out,
    settings,
    yes_option,
)
from pipeline.cli.opskit import acted_options, actor_of, confirm, parse_duration, parse_when, refuse
from pipeline.wiring import load_job_modules

__all__ = ["failed"]


def _filter(
    ids: tuple[int, ...],
    id_range: str | None,
    since: str | None,
    group: str | None,
    *,
    job: str | None = None,
    exception: str | None = None,
) -> Any:
    from consumers.failed_jobs import FailedFilter

    bounds = None
    if id_range is not None:
        match = re.fullmatch(r"([0-9]{1,19})-([0-9]{1,19})", id_range.strip())
        if not match or not 1 <= int(match[1]) <= int(match[2]) <= MAX_ID:
            raise CliExit(
                EXIT_USAGE, f"--range {id_range!r}: give FROM-TO with 1 <= FROM <= TO <= {MAX_ID}"
            )
        bounds = (int(match[1]), int(match[2]))
    return FailedFilter(
        ids=ids,
        id_range=bounds,
        since=parse_when("--since", since, datetime.now(UTC)) if since else None,
        group=group,
        job=job,
        exception=exception,
    )


_job_option = click.option("--job", type=NAME, default=None, help="Only this job (its name).")
_exception_option = click.option(
    "--exception",
    type=NAME,
    default=None,
    help="Only this exception class, as listed (e.g. ReminderNotSent).",
)


def _older_than(value: str) -> datetime:
    """`--older-than 72h`: a duration with its unit, as a moment in the past."""
    if value.strip().replace(".", "", 1).isdigit():
        raise refuse(
            f"--older-than: {value[:40]!r} has no unit; say 30m, 72h or 7d (a bare number "
            "would be seconds)"
        )
    return datetime.now(UTC) - parse_duration("--older-than", value)


@click.group("failed")
def failed() -> None:
    """Failed jobs: list, show, retry, forget, flush."""


@failed.command("list")
@click.option("--group", type=NAME, default=None, help="Only this consumer group.")
@_job_option
@_exception_option
@click.option("--since", default=None, help="Failed since (2h, 1d, or an ISO time).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
@guarded
def failed_list(  # noqa: PLR0917 - click passes each option positionally
    group: str | None,
    job: str | None,
    exception: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List failed jobs, oldest first (no payloads: see `show`)."""
    from consumers.failed_jobs import count_failed, list_failed

    which = _filter((), None, since, group, job=job, exception=exception)
    with engine_for(settings()).connect() as conn:
        rows = list_failed(conn, which, limit)
        total = count_failed(conn, which)
    if as_json:
        dump_json(rows, lines=True)
        return
    table = Table(title=f"failed jobs: {total}" + (f" (first {limit})" if total > limit else ""))
    for name in ("id", "group", "job", "type", "reason", "error", "attempts", "failed at"):
        table.add_column(name)
    for row in rows:
        table.add_row(
            str(row["id"]),
            cell(row["group_name"]),
            cell(row["job_name"] or "-"),
            cell(row["type"] or "-"),
            cell(row["reason"]),
            cell(f"{row['exception_class'] or ''} {row['exception_message'] or ''}".strip()[:80]),
            str(row["attempts"]),
            row["failed_at"].isoformat(timespec="seconds"),
        )
    out.print(table)


@failed.command("show")
@click.argument("failed_id", type=ID)
@click.option("--payload", is_flag=True, help="Also print the payload (personal data masked).")
@json_option
@guarded
def failed_show(failed_id: int, payload: bool, as_json: bool) -> None:
    """One failed job: where it came from, why it failed, its traceback."""
    from consumers.failed_jobs import show
    from web.dashboard.failed_jobs import mask_payload

    with engine_for(settings()).connect() as conn:
        row = show(conn, failed_id)
    if row is None:
        raise CliExit(EXIT_USAGE, f"no failed job with id {failed_id}")
    body = row["payload"]
    # Exception texts and headers can quote personal data: masked like the logs. The
    # payload only when asked for, masked as the dashboard shows it (personal fields keep
    # a hint, addresses and secrets masked): a terminal's scrollback is a copy too.
    row = {k: redact_value(v) for k, v in row.items() if k != "payload"}
    hidden = f"<{len(body)} characters; --payload to print>"
    row["payload"] = mask_payload(body, redact_text) if payload else hidden
    if as_json:
        dump_json(row)
        return
    for name, value in row.items():
        if name != "traceback":
            out.print(f"[bold]{name}[/bold]: {escape(str(value))}", highlight=False)
    if row.get("traceback"):
        out.print(row["traceback"], highlight=False, markup=False)


@failed.command("retry")
@click.argument("ids", type=ID, nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every failed job (of --group, if given).")
@click.option(
    "--range", "id_range", type=TextType(50), default=None, help="An id range, e.g. 10-20."
)
@click.option("--since", default=None, help="Failed since (1h, 2d, or an ISO time).")
@click.option("--group", type=NAME, default=None, help="Only this consumer group.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (bulk retries).")
@click.option(
    "--reviewed-by", type=TextType(128), default=None, help="Who reviewed them (payments)."
)
@click.option(
    "--reason", type=TextType(1000), default=None, help="Why they are retried (with --reviewed-by)."
)
@json_option
@guarded
def failed_retry(  # noqa: PLR0917 - click passes each option positionally
    ids: tuple[int, ...],
    all_: bool,
    id_range: str | None,
    since: str | None,
    group: str | None,
    yes: bool,
    reviewed_by: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Send failed jobs back through their group's retry topic, attempts from zero.

    Failed jobs of a group that moves money (payments) are retried only with --reviewed-by
    NAME --reason TEXT, and each retry is audited (`outbox audit`).
    """
    from consumers import GROUPS
    from consumers.failed_jobs import ReviewRequired, count_failed, retry

    chosen = sum(bool(x) for x in (ids, all_, id_range, since))
    if chosen != 1:
        raise CliExit(EXIT_USAGE, "say which: IDS, --all, --range A-B or --since T (one of them)")
    review = _review(reviewed_by, reason)
    loaded = settings()
    load_job_modules(loaded)
    which = _filter(ids, id_range, since, group)
    engine = engine_for(loaded)
    with engine.connect() as conn:
        count = count_failed(conn, which)
    if ids and count < len(set(ids)):
        raise CliExit(EXIT_USAGE, f"no failed job with id(s) among {list(ids)}; nothing retried")
    if not ids:
        confirm(yes, f"Retry {count} failed job(s)?")
    try:
        with engine.begin() as conn:
            retried = retry(conn, which, dict(GROUPS), shards=loaded.outbox_shards, review=review)
    except ReviewRequired as exc:
        raise CliExit(EXIT_USAGE, str(exc)) from exc
    skipped = count - len(retried)
    if as_json:
        dump_json({"retried": retried, "skipped_unknown_group": skipped})
        return
    out.print(f"retried [bold]{len(retried)}[/bold] failed job(s) through their retry topics")
    if skipped:
        err.print(f"{skipped} row(s) belong to groups this process does not know: left alone")


def _review(reviewed_by: str | None, reason: str | None) -> Any:
    from consumers.failed_jobs import Review

    if reviewed_by is None and reason is None:
        return None
    if reviewed_by is None or reason is None:
        raise CliExit(EXIT_USAGE, "give --reviewed-by NAME and --reason TEXT together")
    try:
        return Review(reviewed_by, reason)
    except ValueError as exc:
        raise CliExit(EXIT_USAGE, str(exc)) from exc


@failed.command("forget")
@click.argument("ids", type=ID, nargs=-1, required=True)
@yes_option
@json_option
@guarded
def failed_forget(ids: tuple[int, ...], yes: bool, as_json: bool) -> None:
    """Delete failed jobs (their DLQ copies stay in Kafka)."""
    from consumers.failed_jobs import FailedFilter, count_failed, forget

    engine = engine_for(settings())
    which = FailedFilter(ids=ids)
    with engine.connect() as conn:
        if count_failed(conn, which) == 0:
            raise CliExit(EXIT_USAGE, f"no failed job with id(s) {list(ids)}; nothing deleted")
    confirm(yes, f"Delete failed job(s) {list(ids)}?")
    with engine.begin() as conn:
        deleted = forget(conn, which)
    if as_json:
        dump_json({"deleted": deleted})
    else:
        out.print(f"deleted {deleted}")


@failed.command("flush")
@click.option("--older-than", default=None, help="Only jobs failed longer ago (30m, 72h, 7d).")
@click.option("--group", type=NAME, default=None, help="Only this consumer group.")
@_job_option
@_exception_option
@click.option(
    "--include-reviewed",
    is_flag=True,
    help="Also the failed jobs of groups reviewed before retry (payments); needs --reason.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@yes_option
@acted_options
@guarded
def failed_flush(  # noqa: PLR0917 - click passes each option positionally
    older_than: str | None,
    group: str | None,
    job: str | None,
    exception: str | None,
    include_reviewed: bool,
    dry_run: bool,
    yes: bool,
    actor: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Delete failed jobs (of --group, --job, --exception, failed --older-than), in chunks,
    each audited (`outbox audit`). Their DLQ copies stay in Kafka.

    Failed jobs of groups reviewed before retry (payments) are kept unless
    --include-reviewed --reason TEXT. Example: outbox failed flush --older-than 72h --yes
    """
    from consumers import GROUPS
    from consumers.failed_jobs import FailedFilter, flush

    if include_reviewed and not reason:
        raise refuse("--include-reviewed deletes failed payments: say why with --reason TEXT")
    which = FailedFilter(
        group=group,
        job=job,
        exception=exception,
        before=_older_than(older_than) if older_than is not None else None,
    )
    loaded = settings()
    load_job_modules(loaded)
    engine = engine_for(loaded)
    kwargs: dict[str, Any] = {
        "actor": actor_of(actor),
        "reason": reason,
        "include_reviewed": include_reviewed,
    }
    plan = flush(engine, which, dict(GROUPS), dry_run=True, **kwargs)
    if not dry_run and plan.deleted:
        confirm(yes, f"Delete {plan.deleted} failed job(s)?")
        done = flush(engine, which, dict(GROUPS), **kwargs)
    else:
        done = plan
    if as_json:
        dump_json(done)
        return
    table = Table(title="would delete" if dry_run else f"deleted {done.deleted}")
    table.add_column("group/job")
    table.add_column("failed jobs", justify="right")
    for name, count in done.by_job.items():
        table.add_row(cell(name), str(count))
    out.print(table)
    if done.kept_for_review:
        err.print(
            f"kept {done.kept_for_review} failed job(s) of groups reviewed before retry "
            "(--include-reviewed --reason TEXT to delete them too)"
        )
