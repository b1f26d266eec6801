"""`outbox status`: one screen of figures (--json for scripts, --watch to follow)."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine

from pipeline.cli.clikit import (
    FiniteFloat,
    cell,
    dump_json,
    engine_for,
    guarded,
    json_option,
    out,
    settings,
)
from pipeline.cli.opskit import refuse

__all__ = ["groups_table", "status", "status_data", "status_screen"]


def status_data(engine: Engine, *, lease_ttl_s: float, bootstrap: str | None) -> dict[str, Any]:
    """The figures of `outbox status`; consumer groups only with a broker (`bootstrap`)."""
    from outbox.scheduler_state import last_firings, leader_state
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
    from pipeline.wiring import group_topics

    try:
        admin = admin_client(bootstrap)
        try:
            data["consumer_groups"] = [
                g.as_dict() for g in consumer_groups(admin, topics_of=group_topics)
            ]
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
        backlog.add_row(cell(topic), *(str(counts.get(s, 0)) for s in statuses))
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
    parts.append(groups_table(d["consumer_groups"]))
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


def groups_table(views: list[dict[str, Any]]) -> Table:
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
@json_option
@click.option("--watch", type=FiniteFloat(0.5, 3600), default=None, help="Refresh every N s.")
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
