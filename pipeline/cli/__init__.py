"""The `outbox` command line (click + rich).

One module per command group (`pipeline/cli/<group>.py`), registered in the one block below,
as celery's `bin/` does. Every command that prints takes the shared `--json` option and
prints through the one JSON dumper (`pipeline.cli.clikit`). `python -m pipeline.cli` runs it
(`__main__.py`).

Exit codes: 0 done; 1 failed (see the message); 2 bad usage or input;
3 bad configuration (the message names the variable); 4 database unreachable;
5 Kafka broker unreachable. No input makes a command print a Python traceback: an error
nobody translated is one line and exit 1 (LOG_LEVEL=debug adds the traceback).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import click
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from infra.logs import redact_text
from pipeline.cli.audit import audit
from pipeline.cli.batches import batches
from pipeline.cli.broker import broker
from pipeline.cli.clikit import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliExit,
    database_error,
    err,
)
from pipeline.cli.config import config
from pipeline.cli.consume import consume
from pipeline.cli.consumers import consumers
from pipeline.cli.coroner import coroner
from pipeline.cli.dashboard import dashboard
from pipeline.cli.db import db
from pipeline.cli.demo import demo
from pipeline.cli.exports import exports, reports
from pipeline.cli.failed import failed
from pipeline.cli.privacy import privacy
from pipeline.cli.projections import projections
from pipeline.cli.prune import prune
from pipeline.cli.relay import relay
from pipeline.cli.repair import park, release, requeue, skip
from pipeline.cli.replay import replay, replays
from pipeline.cli.schedule import schedule
from pipeline.cli.scheduler import scheduler
from pipeline.cli.serve import serve
from pipeline.cli.status import status
from pipeline.cli.topics import topics
from pipeline.cli.webhooks import webhooks
from pipeline.settings import Settings, SettingsError, load_settings

__all__ = ["cli", "main"]


@click.group(epilog=EXIT_CODES_HELP)
def cli() -> None:
    """Event-sourced domain events with a transactional outbox relayed to Kafka."""


# Set-up and the write path.
cli.add_command(db)
cli.add_command(projections)
cli.add_command(config)
cli.add_command(demo)
# Kafka and the relay.
cli.add_command(broker)
cli.add_command(topics)
cli.add_command(relay)
# Consumers and their failed jobs.
cli.add_command(consume)
cli.add_command(failed)
cli.add_command(batches)
cli.add_command(consumers)
# The scheduler.
cli.add_command(scheduler)
cli.add_command(schedule)
# Incident tooling.
cli.add_command(coroner)
cli.add_command(park)
cli.add_command(release)
cli.add_command(skip)
cli.add_command(requeue)
cli.add_command(audit)
cli.add_command(replay)
cli.add_command(replays)
cli.add_command(prune)
cli.add_command(privacy)
cli.add_command(status)
cli.add_command(serve)
cli.add_command(dashboard)
# Sales exports and PDF reports.
cli.add_command(exports)
cli.add_command(reports)
cli.add_command(webhooks)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `outbox` console script; returns the exit code."""
    from infra.logs import configure_logging, register_secrets

    loaded: Settings | SettingsError
    try:
        loaded = load_settings()
        register_secrets(loaded.secret_values())  # masked in every line and printout
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
    except KeyboardInterrupt:  # Ctrl-C before a command installed its own handler
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _exit_code(exc, loaded)
    return EXIT_OK


# 128 + SIGINT, as a shell reports a process interrupted by Ctrl-C.
EXIT_INTERRUPTED = 130


def _exit_code(exc: Exception, loaded: Settings | SettingsError) -> int:
    """What a command's exception means for the operator: one line and the exit code."""
    if isinstance(exc, click.exceptions.Exit):
        return int(exc.exit_code)
    if isinstance(exc, click.exceptions.ClickException):
        exc.show()
        return EXIT_USAGE
    if isinstance(exc, click.exceptions.Abort):
        err.print("aborted")
        return EXIT_FAILED
    stop = exc if isinstance(exc, CliExit) else None
    if stop is None:
        # Outside a guarded command, or nobody translated it (a bug): still one line.
        stop = (
            database_error(exc)
            if isinstance(exc, SQLAlchemyError)
            else CliExit(EXIT_FAILED, _unexpected(exc))
        )
        if isinstance(loaded, Settings) and loaded.log_level == "debug":
            err.print(redact_text("".join(traceback.format_exception(exc))), markup=False)
    err.print(f"[red]error:[/red] {escape(redact_text(str(stop)))}", highlight=False)
    return stop.code


def _unexpected(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return (
        f"unexpected {type(exc).__name__}: {redact_text(first)} "
        "(a bug: LOG_LEVEL=debug shows where; nothing else was done after it)"
    )
