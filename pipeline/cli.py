"""The `outbox` command line (click + rich).

Exit codes: 0 done; 1 failed (see the message); 2 bad usage or input;
3 bad configuration (the message names the variable); 4 database unreachable;
5 Kafka broker unreachable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click
from rich.console import Console

from pipeline.clikit import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliExit,
    engine_for,
    err,
    guarded,
    out,
    settings,
)
from pipeline.consume_cli import batches, consume, failed
from pipeline.relay_cli import broker, relay, topics
from pipeline.scheduler_cli import schedule, scheduler
from pipeline.serve_cli import serve
from pipeline.settings import Settings, SettingsError, load_settings

__all__ = ["cli", "main"]


@click.group(epilog=EXIT_CODES_HELP)
def cli() -> None:
    """Event-sourced domain events with a transactional outbox relayed to Kafka."""


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@guarded
def db_upgrade(revision: str) -> None:
    """Apply the migrations up to REVISION (default: the newest)."""
    from pipeline.migrate import current_revision, upgrade

    engine = engine_for(settings())
    upgrade(engine, revision)
    out.print(f"database at revision [bold]{current_revision(engine)}[/bold]")


@db.command("current")
@guarded
def db_current() -> None:
    """Print the revision the database is at."""
    from pipeline.migrate import current_revision

    out.print(current_revision(engine_for(settings())) or "(not migrated)")


@cli.group()
def projections() -> None:
    """State tables derived from the event store."""


@projections.command("rebuild")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@guarded
def projections_rebuild(yes: bool, as_json: bool) -> None:
    """Empty the state tables and rebuild them from the event store, in one transaction."""
    from rich.progress import Progress

    from domain import rebuild_projections, registry

    loaded = settings()
    if not yes and not click.confirm(
        "Rebuild every state table from the event store? Writers wait until it is done.",
        default=False,
    ):
        raise CliExit(EXIT_FAILED, "rebuild cancelled; nothing changed")
    engine = engine_for(loaded)
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("replaying events", total=None)
        with engine.begin() as conn:
            count = rebuild_projections(
                conn, registry, progress=lambda n: progress.update(task, completed=n)
            )
    if as_json:
        click.echo(json.dumps({"events_replayed": count}))
    else:
        out.print(f"rebuilt the state tables from [bold]{count}[/bold] events")


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def config_show(as_json: bool) -> None:
    """Show the effective configuration (secrets masked)."""
    loaded = settings()
    values = {k.upper(): v for k, v in loaded.model_dump(mode="json").items()}
    if loaded.payment_webhook_secret is not None:
        values["PAYMENT_WEBHOOK_SECRET"] = "********"  # noqa: S105 - the mask, not a secret
    if as_json:
        click.echo(json.dumps(values))
        return
    for key, value in values.items():
        out.print(f"{key}={value}", highlight=False)


def _add_incident_commands() -> None:
    """coroner, park, release, skip, requeue, audit, replay, prune, status, consumers."""
    from pipeline.ops_cli import INCIDENT_COMMANDS

    for command in INCIDENT_COMMANDS:
        cli.add_command(command)


_add_incident_commands()


@cli.command("demo")
@click.option(
    "--database-url",
    default="sqlite:///var/demo.db",
    show_default=True,
    help="Where the demo writes (recreated).",
)
@guarded
def demo(database_url: str) -> None:
    """Run a scripted business scenario on a fresh database and show what it wrote."""
    from pipeline.demo import run_demo
    from pipeline.logs import configure_logging

    # The demo narrates what happens; one JSON line per command would drown it.
    configure_logging("warning")
    # Piped output defaults to 80 columns, too narrow for the outbox table.
    run_demo(
        database_url,
        out if out.is_terminal else Console(width=120),
        storage_dir=settings().storage_dir,
    )


cli.add_command(relay)
cli.add_command(broker)
cli.add_command(topics)
cli.add_command(consume)
cli.add_command(failed)
cli.add_command(batches)
cli.add_command(scheduler)
cli.add_command(schedule)
cli.add_command(serve)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `outbox` console script; returns the exit code."""
    from pipeline.logs import configure_logging

    loaded: Settings | SettingsError
    try:
        loaded = load_settings()
        configure_logging(loaded.log_level, loaded.log_format)
    except SettingsError as exc:
        loaded = exc  # commands that need settings report the bad variable
        configure_logging()
    try:
        cli.main(
            args=list(argv) if argv is not None else sys.argv[1:],
            standalone_mode=False,
            obj=loaded,
        )
    except CliExit as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return exc.code
    except click.exceptions.Abort:
        err.print("aborted")
        return EXIT_FAILED
    except click.exceptions.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
