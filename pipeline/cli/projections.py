"""`outbox projections rebuild`: the state tables again, from the event store."""

from __future__ import annotations

import click
from rich.progress import Progress

from pipeline.cli.clikit import (
    dump_json,
    engine_for,
    err,
    guarded,
    json_option,
    out,
    settings,
    yes_option,
)
from pipeline.cli.opskit import confirm

__all__ = ["projections"]


@click.group("projections")
def projections() -> None:
    """State tables derived from the event store."""


@projections.command("rebuild")
@yes_option
@json_option
@guarded
def projections_rebuild(yes: bool, as_json: bool) -> None:
    """Empty the state tables and rebuild them from the event store, in one transaction."""
    from domain import rebuild_projections, registry

    loaded = settings()
    confirm(yes, "Rebuild every state table from the event store? Writers wait until it is done.")
    engine = engine_for(loaded)
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("replaying events", total=None)
        with engine.begin() as conn:
            count = rebuild_projections(
                conn, registry, progress=lambda n: progress.update(task, completed=n)
            )
    if as_json:
        dump_json({"events_replayed": count})
    else:
        out.print(f"rebuilt the state tables from [bold]{count}[/bold] events")
