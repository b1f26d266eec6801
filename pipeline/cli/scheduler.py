"""`outbox scheduler`: run the scheduler (or print the schedule with --list)."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
from rich.table import Table

from pipeline.cli.clikit import (
    EXIT_CONFIG,
    CliExit,
    dump_json,
    engine_for,
    err,
    guarded,
    json_option,
    out,
    settings,
)
from pipeline.cli.opskit import refuse
from pipeline.settings import Settings
from pipeline.wiring import build_scheduler, load_job_modules

__all__ = ["built_scheduler", "print_schedule", "schedule_table", "schedule_view", "scheduler"]


def built_scheduler(loaded: Settings, **kwargs: Any) -> Any:
    from scheduler import ScheduleError

    load_job_modules(loaded)
    try:
        return build_scheduler(loaded, engine_for(loaded), **kwargs)
    except ScheduleError as exc:
        raise CliExit(EXIT_CONFIG, f"SCHEDULE: {exc}") from exc


def schedule_view(built: Any, now: datetime) -> dict[str, Any]:
    """Each scheduled job with its trigger, next fire time and last firing; and the leader."""
    from outbox.scheduler_state import last_firings, leader_state

    with built.engine.connect() as conn:
        last = last_firings(conn)
        lease = leader_state(conn)
    rows = []
    for entry in built.entries.values():
        fired = last.get(entry.job)
        rows.append(
            {
                "job": entry.job,
                "when": entry.when,
                "grace_s": entry.grace_s,
                "coalesce": entry.coalesce,
                "next_fire_time": entry.next_after(now),
                "last": None if fired is None else fired.as_dict(),
            }
        )
    leader = None
    if lease is not None and lease.alive(now):
        leader = {"owner": lease.owner, "epoch": lease.epoch, "expires_at": lease.expires_at}
    return {"now": now, "leader": leader, "jobs": rows}


def schedule_table(view: dict[str, Any]) -> Table:
    table = Table(title=f"Schedule (UTC, now {view['now']:%Y-%m-%d %H:%M:%S})")
    for column in ("job", "when", "grace", "next fire time", "last firing"):
        table.add_column(column, no_wrap=column != "last firing")
    for row in view["jobs"]:
        fired = row["last"]
        table.add_row(
            row["job"],
            row["when"] + ("" if row["coalesce"] else " (no coalesce)"),
            f"{row['grace_s'] / 60:g}m",
            f"{row['next_fire_time']:%Y-%m-%d %H:%M:%S}" if row["next_fire_time"] else "-",
            "-"
            if fired is None
            else f"{fired['slot']:%Y-%m-%d %H:%M:%S} {fired['outcome']}"
            + (" (manual)" if fired["manual"] else ""),
        )
    return table


def print_schedule(as_json: bool) -> None:
    view = schedule_view(built_scheduler(settings()), datetime.now(UTC))
    if as_json:
        dump_json(view)
        return
    out.print(schedule_table(view))
    leader = view["leader"]
    out.print(
        f"leader: {leader['owner']} (epoch {leader['epoch']}, lease until "
        f"{leader['expires_at']:%H:%M:%S})"
        if leader
        else "leader: none (no scheduler running)"
    )


@click.command("scheduler")
@click.option("--list", "list_only", is_flag=True, help="Print the schedule and exit.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port.",
)
@json_option
@guarded
def scheduler(list_only: bool, metrics_port: int | None, as_json: bool) -> None:
    """Run the scheduler: fire each job's slots through the outbox while holding the lease.

    Run two or more for fail-over: one leads, the others take over within
    SCHEDULER_LEASE_TTL_S. SIGTERM/SIGINT finish a firing and hand the lease over.
    """
    if list_only:
        print_schedule(as_json)
        return
    if as_json:
        raise refuse("--json goes with --list")
    from scheduler import ScheduleRunner

    built = built_scheduler(settings())
    # Once here, so an unmigrated or unreachable database stops the command with a clear
    # message; afterwards the runner renews every TTL/3 and rides out database outages.
    built.heartbeat()
    runner = ScheduleRunner(built)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="0.0.0.0", registry=built.metrics.registry)  # noqa: S104

    def _stop(signum: int, _frame: FrameType | None) -> None:
        err.print(f"scheduler: {signal.Signals(signum).name}: handing the lease over")
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runner.start()
    while not runner.wait(1.0):
        pass
