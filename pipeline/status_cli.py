"""`outbox status` (one screen, --json, --watch) and `outbox consumers lag|rewind`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Connection, Engine, func, select

from pipeline.clikit import engine_for, guarded, out, settings
from pipeline.opskit import (
    acted_options,
    actor_of,
    check_topics,
    confirm,
    dump_json,
    parse_when,
    refuse,
)

if TYPE_CHECKING:
    from pipeline.kafka_admin import RewindPlan

__all__ = ["consumers", "status", "status_data", "status_screen"]


def status_data(engine: Engine, *, lease_ttl_s: float, bootstrap: str | None) -> dict[str, Any]:
    """The figures of `outbox status`; consumer groups only with a broker (`bootstrap`)."""
    from outbox.scheduling import last_firings, leader_state
    from outbox.status import overview
    from outbox.types import utcnow

    now = utcnow()
    with engine.connect() as conn:
        view = overview(conn, now, lease_ttl_s=lease_ttl_s)
        lease = leader_state(conn)
        fired = last_firings(conn)
    data = view.as_dict()
    data["scheduler"] = {
        "leader": lease.owner if lease is not None and lease.alive(now) else None,
        "last_firings": {job: f.as_dict() for job, f in sorted(fired.items())},
    }
    data["consumer_groups"] = []
    if bootstrap is None:
        return data
    from pipeline.kafka_admin import admin_client, consumer_groups

    try:
        admin = admin_client(bootstrap)
        try:
            data["consumer_groups"] = [g.as_dict() for g in consumer_groups(admin)]
        finally:
            admin.close()
    except Exception as exc:  # the database side is still worth showing
        data["kafka_error"] = str(exc)
    return data


def _gather(no_kafka: bool) -> dict[str, Any]:
    loaded = settings()
    return status_data(
        engine_for(loaded),
        lease_ttl_s=loaded.relay_lease_ttl_s,
        bootstrap=None if no_kafka else loaded.kafka_bootstrap_servers,
    )


def status_screen(d: dict[str, Any]) -> Group:
    """The rich screen of `outbox status` for figures from `status_data`."""
    parts: list[Any] = []
    statuses = list(d["by_status"])
    backlog = Table("topic", *statuses, title="outbox backlog")
    for topic, counts in d["by_topic"].items():
        backlog.add_row(topic, *(str(counts.get(s, 0)) for s in statuses))
    backlog.add_row("[bold]all", *(f"[bold]{d['by_status'][s]}" for s in statuses))
    parts.append(backlog)
    parts.append(
        f"oldest pending [bold]{d['oldest_pending_age_s']:.1f}s[/bold]; published in the last "
        f"minute [bold]{d['published_last_minute']}[/bold] ({d['publish_rate_per_s']}/s); "
        f"parked keys {d['parked_keys']}; failed jobs [bold]{d['failed_jobs']}[/bold]"
    )
    relays = Table("relay", "heartbeat", "alive", "shards", title="relays")
    for name, r in d["relays"].items():
        age = "-" if r["heartbeat_age_s"] is None else f"{r['heartbeat_age_s']:.1f}s ago"
        relays.add_row(
            name, age, "yes" if r["alive"] else "[red]no", ",".join(map(str, r["shards"]))
        )
    parts.append(relays)
    parts.append(_groups_table(d["consumer_groups"]))
    sched = d.get("scheduler")
    if sched is not None:
        parts.append(
            f"scheduler leader: [bold]{sched['leader']}[/bold]"
            if sched["leader"]
            else "scheduler leader: [yellow]none[/yellow] (no `outbox scheduler` running)"
        )
        fired = Table("job", "last slot", "outcome", title="scheduled jobs")
        for job, f in sched["last_firings"].items():
            slot = f["slot"] if isinstance(f["slot"], str) else f"{f['slot']:%Y-%m-%d %H:%M:%S}"
            fired.add_row(job, slot, f["outcome"] + (" (manual)" if f["manual"] else ""))
        if sched["last_firings"]:
            parts.append(fired)
    if "kafka_error" in d:
        parts.append(f"[red]Kafka:[/red] {d['kafka_error']}")
    return Group(*parts)


def _groups_table(views: list[dict[str, Any]]) -> Table:
    table = Table(
        "group", "state", "members", "topic", "partition", "committed", "end", "lag",
        title="consumer groups",
    )  # fmt: skip
    for g in views:
        head = (g["group"], g["state"], str(g["members"]))
        if not g["partitions"]:
            table.add_row(*head, "", "", "", "", "")
        for p in g["partitions"]:
            cells = (p["topic"], p["partition"], p["committed"], p["end"], p["lag"])
            table.add_row(*head, *map(str, cells))
    return table


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--watch", type=click.FloatRange(min=0.5), default=None, help="Refresh every N s.")
@click.option("--no-kafka", is_flag=True, help="Database figures only (no consumer lag).")
@guarded
def status(as_json: bool, watch: float | None, no_kafka: bool) -> None:
    """Backlog by status and topic, oldest pending age, publish rate over the last minute,
    relays and their shards, consumer groups with lag per partition, failed jobs."""
    if as_json and watch:
        raise refuse("--json and --watch: choose one (a script polls --json itself)")
    if as_json:
        dump_json(_gather(no_kafka))
        return
    if not watch:
        out.print(status_screen(_gather(no_kafka)))
        return
    try:
        with Live(status_screen(_gather(no_kafka)), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(watch)
                live.update(status_screen(_gather(no_kafka)), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C ends watching: exit 0


@click.group("consumers")
def consumers() -> None:
    """Kafka consumer groups: lag, offset rewinds."""


@consumers.command("lag")
@click.option("--group", "groups", multiple=True, help="Only this group (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@guarded
def consumers_lag(groups: tuple[str, ...], as_json: bool) -> None:
    """Each group's state, members and lag per partition."""
    from pipeline.kafka_admin import admin_client, consumer_groups

    admin = admin_client(settings().kafka_bootstrap_servers)
    try:
        views = [g.as_dict() for g in consumer_groups(admin, groups or None)]
    finally:
        admin.close()
    if as_json:
        dump_json(views)
    else:
        out.print(_groups_table(views))


@consumers.command("rewind")
@click.option("--group", required=True, help="The (stopped) consumer group.")
@click.option("--to-time", default=None, help="First record at or after (ISO time, or 2h ago).")
@click.option(
    "--to-outbox-id",
    type=click.IntRange(min=1),
    default=None,
    help="The recorded partition/offset of the first outbox row at or after this id.",
)
@click.option("--topic", "topics", multiple=True, help="Only this topic (default: the group's).")
@click.option("--dry-run", is_flag=True, help="Print the new offsets; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@acted_options
@guarded
def consumers_rewind(  # noqa: PLR0917 - click passes each option positionally
    group: str,
    to_time: str | None,
    to_outbox_id: int | None,
    topics: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    actor: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Move a stopped group's committed offsets back so it consumes again from a point.
    Refuses while the group has active members; never moves an offset forward."""
    from outbox.audit import record
    from outbox.types import utcnow
    from pipeline.kafka_admin import admin_client, apply_rewind, plan_rewind

    if (to_time is None) == (to_outbox_id is None):
        raise refuse("give exactly one of --to-time and --to-outbox-id")
    now = utcnow()
    when = parse_when("--to-time", to_time, now) if to_time else None
    if when is not None and when > now:
        raise refuse(f"--to-time: {to_time!r} is in the future")
    loaded = settings()
    engine = engine_for(loaded)
    with engine.connect() as conn:
        check_topics(conn, topics)
        offsets = _outbox_offsets(conn, to_outbox_id, topics) if to_outbox_id else None
    admin = admin_client(loaded.kafka_bootstrap_servers)
    try:
        plan = plan_rewind(admin, group, topics=topics, to_time=when, outbox_offsets=offsets)
        if not plan.moves and not plan.unchanged:
            raise refuse(f"--group: {group!r} has no committed offsets; name its --topic")
        if as_json and dry_run:
            dump_json({"dry_run": True, **plan.as_dict()})
            return
        if not as_json:
            _print_rewind(plan)
        if dry_run:
            return
        confirm(yes, f"Rewind {len(plan.moves)} partition(s) of group {group!r}?")
        apply_rewind(admin, plan)
    finally:
        admin.close()
    with engine.begin() as conn:
        record(conn, at=utcnow(), actor=actor_of(actor), action="rewind", target=f"group:{group}",
               reason=reason, details={"to_time": to_time, "to_outbox_id": to_outbox_id,
                                       **plan.as_dict()})  # fmt: skip
    if as_json:
        dump_json(plan.as_dict())
    else:
        out.print(f"rewound {len(plan.moves)} partition(s) of {group}")


def _outbox_offsets(conn: Connection, first_id: int, topics: tuple[str, ...]) -> dict[Any, int]:
    """(topic, partition) -> the recorded offset of the first published row at/after an id."""
    from outbox import OutboxStatus, outbox_table

    o = outbox_table
    query = (
        select(o.c.topic, o.c.kafka_partition, func.min(o.c.kafka_offset))
        .where(o.c.id >= first_id, o.c.status == OutboxStatus.PUBLISHED)
        .group_by(o.c.topic, o.c.kafka_partition)
    )
    if topics:
        query = query.where(o.c.topic.in_(topics))
    offsets = {(t, int(p)): int(off) for t, p, off in conn.execute(query)}
    if not offsets:
        raise refuse(f"--to-outbox-id: no published outbox row at or after {first_id}")
    return offsets


def _print_rewind(plan: RewindPlan) -> None:
    table = Table("topic", "partition", "committed", "new offset", title=f"rewind {plan.group}")
    for (t, p), (old, new) in sorted(plan.moves.items()):
        table.add_row(t, str(p), str(old), str(new))
    for (t, p), why in sorted(plan.unchanged.items()):
        table.add_row(t, str(p), "", f"unchanged: {why}")
    out.print(table)
