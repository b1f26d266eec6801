"""`outbox schedule list|run`: the periodic jobs, and firing one now during an incident."""

from __future__ import annotations

import re
from datetime import datetime

import click

from pipeline.cli.clikit import (
    KEY,
    NAME,
    TextType,
    cell,
    dump_json,
    guarded,
    json_option,
    out,
    settings,
)
from pipeline.cli.opskit import acted_options, actor_of, refuse
from pipeline.cli.scheduler import built_scheduler, print_schedule

__all__ = ["schedule"]

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@click.group("schedule")
def schedule() -> None:
    """The periodic jobs: list them, or run one now."""


@schedule.command("list")
@json_option
@guarded
def schedule_list(as_json: bool) -> None:
    """The schedule with each job's next fire time, last firing and the leader."""
    print_schedule(as_json)


@schedule.command("run")
@click.argument("job", type=NAME)
@click.option("--tenant", type=KEY, default=None, help="Only this tenant (jobs that take one).")
@click.option(
    "--day", type=TextType(10), default=None, help="The day, YYYY-MM-DD (sync-analytics)."
)
@click.option(
    "--param",
    "extra",
    type=TextType(500),
    multiple=True,
    metavar="KEY=VALUE",
    help="Another parameter (repeat).",
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
    built = built_scheduler(settings())
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
        out.print(cell(f"dispatched {job} (message {record.message_id}); its group runs it"))
    else:
        out.print(cell(f"{job} is already queued (a unique job's lock holds); nothing dispatched"))
