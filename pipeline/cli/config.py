"""`outbox config`: the effective configuration, secrets masked."""

from __future__ import annotations

import click

from pipeline.cli.clikit import dump_json, json_option, out, settings

__all__ = ["config"]


@click.command("config")
@json_option
def config(as_json: bool) -> None:
    """Show the effective configuration (secrets and URL passwords masked)."""
    values = settings().public_view()
    if as_json:
        dump_json(values)
        return
    for key, value in values.items():
        out.print(f"{key}={value}", highlight=False, markup=False)
