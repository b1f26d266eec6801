"""The `outbox` command line (click + rich).

Exit codes: 0 done; 1 failed (see the message); 2 bad usage or input;
3 bad configuration (the message names the variable); 4 database unreachable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from pipeline.settings import Settings, SettingsError, load_settings

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DB_UNREACHABLE",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "cli",
    "main",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, EXIT_DB_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed, 2 bad usage or input, 3 bad configuration "
    "(the message names the variable), 4 database unreachable."
)

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class CliExit(Exception):
    """Stop with a named exit code and one clear line for the operator."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _settings() -> Settings:
    """The settings `main` read once; a bad configuration stops the command here."""
    loaded: Settings | SettingsError = click.get_current_context().find_root().obj
    if isinstance(loaded, SettingsError):
        raise CliExit(EXIT_CONFIG, str(loaded))
    return loaded


def _engine(settings: Settings) -> Engine:
    from pipeline.db import make_engine

    return make_engine(settings.database_url)


def guarded(fn: F) -> F:
    """Translate errors an operator can act on into one line and an exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from domain import DomainError

        try:
            return fn(*args, **kwargs)
        except OperationalError as exc:
            raise CliExit(
                EXIT_DB_UNREACHABLE,
                f"database unreachable or refused the operation: {exc.orig}. "
                "Check DATABASE_URL and that the server is running.",
            ) from exc
        except DomainError as exc:
            raise CliExit(EXIT_USAGE, str(exc)) from exc

    return wrapper  # type: ignore[return-value]


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

    engine = _engine(_settings())
    upgrade(engine, revision)
    out.print(f"database at revision [bold]{current_revision(engine)}[/bold]")


@db.command("current")
@guarded
def db_current() -> None:
    """Print the revision the database is at."""
    from pipeline.migrate import current_revision

    out.print(current_revision(_engine(_settings())) or "(not migrated)")


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

    settings = _settings()
    if not yes and not click.confirm(
        "Rebuild every state table from the event store? Writers wait until it is done.",
        default=False,
    ):
        raise CliExit(EXIT_FAILED, "rebuild cancelled; nothing changed")
    engine = _engine(settings)
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
    settings = _settings()
    values = {k.upper(): v for k, v in settings.model_dump(mode="json").items()}
    if settings.payment_webhook_secret is not None:
        values["PAYMENT_WEBHOOK_SECRET"] = "********"  # noqa: S105 - the mask, not a secret
    if as_json:
        click.echo(json.dumps(values))
        return
    for key, value in values.items():
        out.print(f"{key}={value}", highlight=False)


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
    run_demo(database_url, out if out.is_terminal else Console(width=120))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `outbox` console script; returns the exit code."""
    from pipeline.logs import configure_logging

    settings: Settings | SettingsError
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
    except SettingsError as exc:
        settings = exc  # commands that need settings report the bad variable
        configure_logging()
    try:
        cli.main(
            args=list(argv) if argv is not None else sys.argv[1:],
            standalone_mode=False,
            obj=settings,
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
