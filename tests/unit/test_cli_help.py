"""`outbox --help` and every subcommand's `--help`, held against a stored copy.

Moving the CLI's modules must change nothing a user of the `outbox` command sees: every
command, option, help text and exit-code table stays (ADR 015). This test holds that
promise for every change. A deliberate change to the
CLI regenerates the copy: `OUTBOX_UPDATE_CLI_HELP=1 pytest tests/unit/test_cli_help.py`,
and the diff of tests/data/cli_help.txt shows the reviewer what users will see.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from pipeline.cli import cli

STORED = Path(__file__).resolve().parents[1] / "data" / "cli_help.txt"


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            yield from _commands(group.commands[name], (*path, name))


def _all_help() -> str:
    runner = CliRunner()
    pages = []
    for path in _commands(cli):
        # A fixed width: click wraps help text to the terminal's.
        result = runner.invoke(
            cli, [*path, "--help"], prog_name="outbox", terminal_width=100, env={"COLUMNS": "100"}
        )
        assert result.exit_code == 0, (path, result.output)
        pages.append(f"$ outbox {' '.join([*path, '--help'])}\n{result.output}")
    return "\n".join(pages)


def test_every_command_prints_the_help_users_know() -> None:
    current = _all_help()
    if os.environ.get("OUTBOX_UPDATE_CLI_HELP") == "1":
        STORED.write_text(current)
    assert current == STORED.read_text(), (
        "the CLI's help changed: if on purpose, regenerate tests/data/cli_help.txt "
        "(OUTBOX_UPDATE_CLI_HELP=1) and say so in the commit"
    )


def test_the_stored_help_covers_every_command() -> None:
    stored = STORED.read_text()
    for path in _commands(cli):
        assert f"$ outbox {' '.join([*path, '--help'])}\n" in stored, path
