"""`outbox scheduler` (run, or --list) and `outbox schedule run|list`."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
from rich.table import Table

from pipeline.clikit import EXIT_CONFIG, CliExit, engine_for, err, guarded, out, settings
from pipeline.opskit import acted_options, actor_of, dump_json, json_option, refuse
from pipeline.settings import Settings
from pipeline.wiring import build_scheduler, load_job_modules

__all__ = ["schedule", "schedule_table", "schedule_view", "scheduler"]

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _built(loaded: Settings, **kwargs: Any) -> Any:
    from scheduler import ScheduleError

    load_job_modules(loaded)
    try:
        return build_scheduler(loaded, engine_for(loaded), **kwargs)
    except ScheduleError as exc:
        raise CliExit(EXIT_CONFIG, f"SCHEDULE: {exc}") from exc


def schedule_view(built: Any, now: datetime) -> dict[str, Any]:
    """Each scheduled job with its trigger, next fire time and last firing; and the leader."""
    from outbox.scheduling import last_firings, leader_state

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


def _listing(as_json: bool) -> None:
    view = schedule_view(_built(settings()), datetime.now(UTC))
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
        _listing(as_json)
        return
    if as_json:
        raise refuse("--json goes with --list")
    from scheduler import ScheduleRunner

    built = _built(settings())
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


@click.group("schedule")
def schedule() -> None:
    """The periodic jobs: list them, or run one now."""


@schedule.command("list")
@json_option
@guarded
def schedule_list(as_json: bool) -> None:
    """The schedule with each job's next fire time, last firing and the leader."""
    _listing(as_json)


@schedule.command("run")
@click.argument("job")
@click.option("--tenant", default=None, help="Only this tenant (jobs that take one).")
@click.option("--day", default=None, help="The day, YYYY-MM-DD (sync-analytics).")
@click.option(
    "--param", "extra", multiple=True, metavar="KEY=VALUE", help="Another parameter (repeat)."
)
@acted_options
@guarded
def schedule_run(
    *,
    job: str,
    tenant: str | None,
    day: str | None,
    extra: tuple[str, ...],
    actor: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Dispatch one job now (during an incident), whether or not a scheduler runs.

    It goes through the outbox like a scheduled firing and is audited. A unique job already
    queued (e.g. sync-analytics for the same day) is not queued twice.
    """
    from scheduler import ScheduleError

    params: dict[str, str] = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise refuse(f"--param: {item!r} is not KEY=VALUE")
        params[key.strip()] = value.strip()
    if tenant is not None:
        if not tenant.strip():
            raise refuse("--tenant: empty")
        params["tenant_id"] = tenant.strip()
    if day is not None:
        try:
            if not _DAY.match(day):
                raise ValueError
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            raise refuse(f"--day: {day!r} is not a date like 2026-11-21") from None
        params["day"] = day
    built = _built(settings())
    try:
        record = built.run_now(job, params=params, actor=actor_of(actor), reason=reason)
    except ScheduleError as exc:
        raise refuse(str(exc)) from exc
    result = {
        "job": job,
        "outcome": record.outcome,
        "message_id": record.message_id,
        "params": params,
        "at": record.fired_at,
    }
    if as_json:
        dump_json(result)
        return
    if record.message_id:
        out.print(f"dispatched {job} (message {record.message_id}); its consumer group runs it")
    else:
        out.print(f"{job} is already queued (a unique job's lock holds); nothing dispatched")
