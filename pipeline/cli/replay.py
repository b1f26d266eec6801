"""`outbox replay` (publish a range again) and `outbox replays list|close`: long work with a
progress bar on a terminal, a preview with --dry-run, an audit row when done."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.progress import Progress
from rich.table import Table

from pipeline.cli.clikit import (
    ID,
    KEY,
    NAME,
    FiniteFloat,
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
from pipeline.cli.opskit import acted_options, actor_of, check_topics, confirm, parse_when, refuse

__all__ = ["progress_bar", "replay", "replays"]


@contextmanager
def progress_bar(label: str, total: int, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal and the output is not JSON."""
    with Progress(console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(label, total=total or None)
        yield lambda done: bar.update(task, completed=done)


@click.command("replay")
@click.option("--from-id", type=ID, default=None, help="First outbox id.")
@click.option("--to-id", type=ID, default=None, help="Last outbox id.")
@click.option("--since", default=None, help="Created at or after (ISO time, or 2h, 7d ago).")
@click.option("--until", default=None, help="Created at or before (ISO time, or 2h, 7d ago).")
@click.option("--topic", "topics", type=NAME, multiple=True, help="Only this topic (repeatable).")
@click.option(
    "--type", "types", type=NAME, multiple=True, help="Only this event type (repeatable)."
)
@click.option(
    "--aggregate", type=NAME, default=None, help="Only this aggregate type (order, product...)."
)
@click.option("--key", type=KEY, default=None, help="Only this key (aggregate id).")
@click.option(
    "--status",
    type=click.Choice(["published", "dead", "any"]),
    default="published",
    show_default=True,
    help="Which rows: published, dead, or both.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; change nothing.")
@click.option(
    "--rerun",
    is_flag=True,
    help="Ask consumers to run their effects again (x-replay-rerun: true); by default "
    "they skip the copies, having seen their event ids.",
)
@click.option("--rate", type=FiniteFloat(0.1, 1_000_000), default=None, help="At most N rows/s.")
@yes_option
@acted_options
@guarded
def replay(  # noqa: PLR0917 - click passes each option positionally
    from_id: int | None,
    to_id: int | None,
    since: str | None,
    until: str | None,
    topics: tuple[str, ...],
    types: tuple[str, ...],
    aggregate: str | None,
    key: str | None,
    status: str,
    dry_run: bool,
    rerun: bool,
    rate: float | None,
    yes: bool,
    actor: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Publish published (or dead) rows again, in their original order, through the relay.

    Copies keep the event id (idempotent consumers skip them unless --rerun) and carry
    x-replay-id / ce_replay headers naming the replay. At least one filter is required.
    """
    from outbox.audit import Refused
    from outbox.replay import ReplayFilter, preview
    from outbox.replay import replay as run
    from outbox.types import utcnow

    now = utcnow()
    statuses = ("published", "dead") if status == "any" else (status,)
    flt = ReplayFilter(
        from_id=from_id,
        to_id=to_id,
        since=parse_when("--since", since, now) if since else None,
        until=parse_when("--until", until, now) if until else None,
        topics=topics,
        types=types,
        aggregate=aggregate,
        key=key,
        statuses=statuses,
    )
    if not any((from_id, to_id, since, until, topics, types, aggregate, key)):
        raise refuse(
            "give at least one filter (--from-id/--to-id, --since/--until, --topic, --type, "
            "--aggregate, --key): replaying everything is never what an incident needs"
        )
    try:
        flt.check()
    except Refused as exc:
        raise refuse(str(exc)) from exc
    loaded = settings()
    engine = engine_for(loaded)
    with engine.connect() as conn:
        check_topics(conn, topics)
        seen = preview(conn, flt)
    if dry_run or not seen.count:
        if as_json:
            dump_json({"dry_run": dry_run, **seen.as_dict()})
        else:
            _print_preview(seen.count, seen.first_id, seen.last_id, seen.by_topic, dry_run)
        return
    confirm(
        yes,
        f"Publish {seen.count} rows (ids {seen.first_id}..{seen.last_id}) again"
        + (" and make consumers re-run their effects" if rerun else "")
        + "?",
    )
    with progress_bar("replaying", seen.count, as_json) as progress:
        result = run(
            engine,
            flt,
            actor=actor_of(actor),
            reason=reason,
            shards=loaded.outbox_shards,
            rerun=rerun,
            rate=rate,
            progress=progress,
        )
    if as_json:
        dump_json(result.as_dict())
        return
    out.print(
        f"replay [bold]{result.replay_id}[/bold]: {result.count} rows "
        f"(ids {result.first_id}..{result.last_id}) queued as new pending rows "
        f"{result.copies_first_id}..{result.copies_last_id}; the relay publishes them"
        + ("; consumers re-run their effects" if rerun else "")
    )


def _print_preview(
    count: int, first: int | None, last: int | None, by_topic: dict[str, int], dry_run: bool
) -> None:
    verb = "would replay" if dry_run else "nothing to replay:"
    out.print(f"{verb} [bold]{count}[/bold] rows, ids {first}..{last}")
    if by_topic:
        table = Table("topic", "rows")
        for topic, n in by_topic.items():
            table.add_row(cell(topic), str(n))
        out.print(table)


@click.group("replays")
def replays() -> None:
    """Replays made so far; close one whose process died."""


@replays.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
@guarded
def replays_list(limit: int, as_json: bool) -> None:
    """Newest first: id, state, rows, original ids, copy ids, who and why."""
    from outbox.replay import list_replays

    with engine_for(settings()).connect() as conn:
        rows = list_replays(conn, limit)
    if as_json:
        dump_json(rows)
        return
    table = Table(title="replays")
    for name in ("id", "status", "rows", "originals", "copies", "rerun", "actor", "created"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            r["id"],
            r["status"],
            str(r["count"]),
            f"{r['first_id']}..{r['last_id']}",
            f"{r['copies_first_id']}..{r['copies_last_id'] or '?'}",
            "yes" if r["rerun"] else "no",
            cell(r["actor"]),
            r["created_at"].isoformat(timespec="seconds"),
        )
    out.print(table)


@replays.command("close")
@click.argument("replay_id", type=TextType(36))
@yes_option
@acted_options
@guarded
def replays_close(
    replay_id: str, yes: bool, actor: str | None, reason: str | None, as_json: bool
) -> None:
    """Close a replay left `running` by a process that died, so prune is held back only
    until its copies are out. Make sure no `outbox replay` is still running it."""
    from outbox.audit import Refused
    from outbox.replay import close_abandoned
    from outbox.types import utcnow

    confirm(yes, f"Close replay {replay_id} (its process must be gone)?")
    try:
        with engine_for(settings()).begin() as conn:
            closed = close_abandoned(
                conn, replay_id, actor=actor_of(actor), reason=reason, now=utcnow()
            )
    except Refused as exc:
        raise refuse(str(exc)) from exc
    if as_json:
        dump_json(closed)
        return
    out.print(f"replay {replay_id} closed as interrupted after {closed['copies']} copies")
