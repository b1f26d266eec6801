"""CLI fuzz: every command that ends by itself, every option, hostile values. Nothing prints
a traceback, every exit code is one the documented table has, and an input refused (2)
leaves the database as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from outbox.schema import metadata as outbox_metadata
from pipeline.cli import cli, main
from tests import incident_helpers
from tests.scenario import run_full_scenario

pytestmark = pytest.mark.integration
SQLITE = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

db = incident_helpers.db
cli_db = incident_helpers.cli_db

# Commands that run until stopped, serve, or need a broker (a refused broker costs seconds).
LONG_RUNNING = {"relay", "consume", "scheduler", "serve", "broker", "demo", "topics",
                "consumers", "status", "dashboard"}  # fmt: skip
DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 5}


def _leaves(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if not path and name in LONG_RUNNING:
            continue
        if isinstance(command, click.Group):
            yield from _leaves(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = list(_leaves(cli))

HOSTILE = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "", " ", "-1", "0", "99999999999999999999", "1e400", "nan", "inf", "-inf",
            "99999999999w", "0001-01-01T00:00:00", "9999-12-31T23:59:59", "1-99999999999999999999",
            "a\x00b", "\u200b", "x" * 5000, "../../etc/passwd", "/dev/null/x", "--json", "[red]x",
            "'; DROP TABLE outbox; --", "10-1", "1h", "2026-13-45",
        ]
    ),
)  # fmt: skip


def _argv(data: st.DataObject, path: tuple[str, ...], command: click.Command) -> list[str]:
    argv = list(path)
    for param in command.params:
        if isinstance(param, click.Argument):
            if param.required or data.draw(st.booleans()):
                argv.append(data.draw(HOSTILE))
        elif isinstance(param, click.Option):
            if param.name in ("watch",):
                continue
            if param.is_flag:
                if param.name not in ("yes",) and data.draw(st.booleans()):
                    argv.append(param.opts[0])
            elif param.required or data.draw(st.booleans()):
                argv += [param.opts[0], data.draw(HOSTILE)]
    return argv


def _snapshot(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in outbox_metadata.sorted_tables
        }


@pytest.fixture
def seeded(cli_db: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Engine:
    from domain import CommandBus

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)  # an --archive path lands here, never in the repository
    run_full_scenario(CommandBus(cli_db, shards=8))
    return cli_db


@SQLITE
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_options_never_print_a_traceback_and_a_refusal_changes_nothing(
    seeded: Engine, data: st.DataObject, capsys: pytest.CaptureFixture[str]
) -> None:
    path, command = data.draw(st.sampled_from(COMMANDS), label="command")
    argv = _argv(data, path, command)
    before = _snapshot(seeded)
    capsys.readouterr()
    code = main(argv)
    printed: Any = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err, argv
    assert code in DOCUMENTED_EXITS, (argv, code, printed.err[-500:])
    if code == 2:
        assert _snapshot(seeded) == before, argv


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_and_refuses_an_unknown_option(
    path: tuple[str, ...], command: click.Command, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path, "--help"]) == 0
    assert main([*path, "--no-such-option"]) == 2
    assert "Traceback" not in capsys.readouterr().err
