"""`outbox consume`, `outbox failed ...` and `outbox batches ...`."""

from __future__ import annotations

import json
import re
import signal
import sys
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
from rich.table import Table
from sqlalchemy import select

from pipeline.clikit import EXIT_USAGE, CliExit, engine_for, err, guarded, out, settings
from pipeline.opskit import confirm, parse_when
from pipeline.supervisor import supervise
from pipeline.wiring import build_worker, load_job_modules

__all__ = ["EXIT_REPLACE", "batches", "consume", "failed"]

# A worker exits with this after a job ran past its timeout; the supervisor starts another.
EXIT_REPLACE = 75


def _group(name: str) -> None:
    from consumers import GROUPS

    if name not in GROUPS:
        known = ", ".join(sorted(GROUPS))
        raise CliExit(EXIT_USAGE, f"no consumer group named {name!r}; known groups: {known}")


@click.command("consume")
@click.option("--group", "group_name", required=True, help="The consumer group to run.")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    help="Worker processes to supervise (restarted when they die or a job times out).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (worker N on port+N).",
)
@click.option("--worker", is_flag=True, hidden=True, help="Be one worker (the supervisor's child).")
@guarded
def consume(group_name: str, processes: int, metrics_port: int | None, worker: bool) -> None:
    """Run a consumer group's jobs: idempotent, retried, failed jobs recorded.

    SIGTERM/SIGINT finish the message in flight, commit its offset and leave the group.
    """
    loaded = settings()
    load_job_modules(loaded)
    _group(group_name)
    if not worker:

        def command(index: int) -> list[str]:
            cmd = [sys.executable, "-m", "pipeline.cli", "consume", "--group", group_name]
            if metrics_port:
                cmd += ["--metrics-port", str(metrics_port + index)]
            return [*cmd, "--worker"]

        supervise(f"consume {group_name}", command, processes)
        return
    runner = build_worker(loaded, engine_for(loaded), group_name, serve_metrics=bool(metrics_port))
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="0.0.0.0", registry=runner.metrics.registry)  # noqa: S104

    def _stop(signum: int, _frame: FrameType | None) -> None:
        err.print(f"consume {group_name}: {signal.Signals(signum).name}: finishing the message")
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stats = runner.run()
    if stats.exit_reason == "replace":
        raise CliExit(
            EXIT_REPLACE, f"consume {group_name}: a job timed out; exiting to be replaced"
        )


# -- failed jobs -------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, default=str, indent=None)


def _filter(
    ids: tuple[int, ...], id_range: str | None, since: str | None, group: str | None
) -> Any:
    from consumers.failed import FailedFilter

    bounds = None
    if id_range is not None:
        match = re.fullmatch(r"(\d+)-(\d+)", id_range.strip())
        if not match or int(match[1]) > int(match[2]):
            raise CliExit(EXIT_USAGE, f"--range {id_range!r}: give FROM-TO with FROM <= TO")
        bounds = (int(match[1]), int(match[2]))
    return FailedFilter(
        ids=ids,
        id_range=bounds,
        since=parse_when("--since", since, datetime.now(UTC)) if since else None,
        group=group,
    )


@click.group("failed")
def failed() -> None:
    """Failed jobs: list, show, retry, forget, flush."""


@failed.command("list")
@click.option("--group", default=None, help="Only this consumer group.")
@click.option("--since", default=None, help="Failed since (2h, 1d, or an ISO time).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@guarded
def failed_list(group: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """List failed jobs, oldest first (no payloads: see `show`)."""
    from consumers.failed import count_failed, list_failed

    which = _filter((), None, since, group)
    with engine_for(settings()).connect() as conn:
        rows = list_failed(conn, which, limit)
        total = count_failed(conn, which)
    if as_json:
        for row in rows:
            click.echo(_json(row))
        return
    table = Table(title=f"failed jobs: {total}" + (f" (first {limit})" if total > limit else ""))
    for name in ("id", "group", "job", "type", "reason", "error", "attempts", "failed at"):
        table.add_column(name)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["group_name"],
            row["job_name"] or "-",
            row["type"] or "-",
            row["reason"],
            f"{row['exception_class'] or ''} {row['exception_message'] or ''}".strip()[:80],
            str(row["attempts"]),
            row["failed_at"].isoformat(timespec="seconds"),
        )
    out.print(table)


@failed.command("show")
@click.argument("failed_id", type=int)
@click.option("--payload", is_flag=True, help="Also print the payload (may hold personal data).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@guarded
def failed_show(failed_id: int, payload: bool, as_json: bool) -> None:
    """One failed job: where it came from, why it failed, its traceback."""
    from consumers.failed import show

    with engine_for(settings()).connect() as conn:
        row = show(conn, failed_id)
    if row is None:
        raise CliExit(EXIT_USAGE, f"no failed job with id {failed_id}")
    if not payload:
        row["payload"] = f"<{len(row['payload'])} characters; --payload to print>"
    if as_json:
        click.echo(_json(row))
        return
    for name, value in row.items():
        if name != "traceback":
            out.print(f"[bold]{name}[/bold]: {value}", highlight=False)
    if row.get("traceback"):
        out.print(row["traceback"], highlight=False)


@failed.command("retry")
@click.argument("ids", type=int, nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every failed job (of --group, if given).")
@click.option("--range", "id_range", default=None, help="An id range, e.g. 10-20.")
@click.option("--since", default=None, help="Failed since (1h, 2d, or an ISO time).")
@click.option("--group", default=None, help="Only this consumer group.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (bulk retries).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--reviewed-by", default=None, help="Who reviewed them (required for payments).")
@click.option("--reason", default=None, help="Why they are retried (with --reviewed-by).")
@guarded
def failed_retry(  # noqa: PLR0917 - click passes each option positionally
    ids: tuple[int, ...],
    all_: bool,
    id_range: str | None,
    since: str | None,
    group: str | None,
    yes: bool,
    as_json: bool,
    reviewed_by: str | None,
    reason: str | None,
) -> None:
    """Send failed jobs back through their group's retry topic, attempts from zero.

    Failed jobs of a group that moves money (payments) are retried only with --reviewed-by
    NAME --reason TEXT, and each retry is audited (`outbox audit`).
    """
    from consumers import GROUPS
    from consumers.failed import ReviewRequired, count_failed, retry

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
        click.echo(_json({"retried": retried, "skipped_unknown_group": skipped}))
        return
    out.print(f"retried [bold]{len(retried)}[/bold] failed job(s) through their retry topics")
    if skipped:
        err.print(f"{skipped} row(s) belong to groups this process does not know: left alone")


def _review(reviewed_by: str | None, reason: str | None) -> Any:
    from consumers.failed import Review

    if reviewed_by is None and reason is None:
        return None
    if reviewed_by is None or reason is None:
        raise CliExit(EXIT_USAGE, "give --reviewed-by NAME and --reason TEXT together")
    try:
        return Review(reviewed_by, reason)
    except ValueError as exc:
        raise CliExit(EXIT_USAGE, str(exc)) from exc


@failed.command("forget")
@click.argument("ids", type=int, nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@guarded
def failed_forget(ids: tuple[int, ...], yes: bool, as_json: bool) -> None:
    """Delete failed jobs (their DLQ copies stay in Kafka)."""
    from consumers.failed import FailedFilter, count_failed, forget

    engine = engine_for(settings())
    which = FailedFilter(ids=ids)
    with engine.connect() as conn:
        if count_failed(conn, which) == 0:
            raise CliExit(EXIT_USAGE, f"no failed job with id(s) {list(ids)}; nothing deleted")
    confirm(yes, f"Delete failed job(s) {list(ids)}?")
    with engine.begin() as conn:
        deleted = forget(conn, which)
    click.echo(_json({"deleted": deleted})) if as_json else out.print(f"deleted {deleted}")


@failed.command("flush")
@click.option("--group", default=None, help="Only this consumer group.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@guarded
def failed_flush(group: str | None, yes: bool, as_json: bool) -> None:
    """Delete every failed job (of --group)."""
    from consumers.failed import FailedFilter, count_failed, forget

    engine = engine_for(settings())
    which = FailedFilter(group=group)
    with engine.connect() as conn:
        count = count_failed(conn, which)
    confirm(yes, f"Delete all {count} failed job(s){f' of {group}' if group else ''}?")
    with engine.begin() as conn:
        deleted = forget(conn, which)
    click.echo(_json({"deleted": deleted})) if as_json else out.print(f"deleted {deleted}")


# -- batches -----------------------------------------------------------------------------------


@click.group("batches")
def batches() -> None:
    """Fan-out batches: progress and outcome."""


def _batch_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["state"] = (
        "running" if data["finished_at"] is None else "failed" if data["failed"] else "succeeded"
    )
    return data


@batches.command("list")
@click.option("--unfinished", is_flag=True, help="Only batches still running.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@guarded
def batches_list(unfinished: bool, limit: int, as_json: bool) -> None:
    """Newest batches first."""
    from outbox import job_batches_table as b

    query = select(b).order_by(b.c.created_at.desc()).limit(limit)
    if unfinished:
        query = query.where(b.c.finished_at.is_(None))
    with engine_for(settings()).connect() as conn:
        rows = [_batch_dict(r) for r in conn.execute(query)]
    if as_json:
        for row in rows:
            click.echo(_json(row))
        return
    table = Table(title="batches")
    for name in ("id", "name", "group", "total", "pending", "failed", "state", "created"):
        table.add_column(name)
    for row in rows:
        table.add_row(
            row["id"],
            row["name"],
            row["group_name"],
            str(row["total"]),
            str(row["pending"]),
            str(row["failed"]),
            row["state"],
            row["created_at"].isoformat(timespec="seconds"),
        )
    out.print(table)


@batches.command("show")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@guarded
def batches_show(batch_id: str, as_json: bool) -> None:
    """One batch's counts and follow-ups."""
    from outbox import job_batches_table as b

    with engine_for(settings()).connect() as conn:
        row = conn.execute(select(b).where(b.c.id == batch_id)).one_or_none()
    if row is None:
        raise CliExit(EXIT_USAGE, f"no batch with id {batch_id!r}")
    data = _batch_dict(row)
    if as_json:
        click.echo(_json(data))
        return
    for name, value in data.items():
        out.print(f"[bold]{name}[/bold]: {value}", highlight=False)
