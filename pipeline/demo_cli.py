"""`outbox demo`: the scripted scenario on a fresh database."""

from __future__ import annotations

import click
from rich.console import Console

from pipeline.clikit import TextType, guarded, out, settings
from pipeline.opskit import refuse

__all__ = ["demo"]


@click.command("demo")
@click.option(
    "--database-url",
    type=TextType(2000),
    default="sqlite:///var/demo.db",
    show_default=True,
    help="Where the demo writes (recreated).",
)
@guarded
def demo(database_url: str) -> None:
    """Run a scripted business scenario on a fresh database and show what it wrote."""
    from pipeline.db import check_database_url
    from pipeline.demo import run_demo
    from pipeline.logs import configure_logging

    try:
        check_database_url(database_url)
    except ValueError as exc:
        raise refuse(f"--database-url: {exc}") from None
    # The demo narrates what happens; one JSON line per command would drown it.
    configure_logging("warning")
    # Piped output defaults to 80 columns, too narrow for the outbox table.
    run_demo(
        database_url,
        out if out.is_terminal else Console(width=120),
        storage_dir=settings().storage_dir,
    )
