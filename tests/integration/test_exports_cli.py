"""`outbox exports request|list` and `outbox reports request` on a real SQLite database:
the command is sent, bad input gets exit 2 and a clear line, the list shows the URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain import CommandBus
from infra.db import make_engine
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK, EXIT_USAGE
from tests.export_helpers import job_config, load_orders, run_job
from tests.scenario import ensure_tenant

pytestmark = pytest.mark.integration
TODAY = datetime.now(UTC).date()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CommandBus:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    assert main(["db", "upgrade"]) == EXIT_OK
    bus = CommandBus(make_engine(f"sqlite:///{tmp_path}/cli.db"), shards=16)
    ensure_tenant(bus, "t-1")
    return bus


def _request(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    capsys.readouterr()
    assert main([*args, "--json"]) == EXIT_OK
    return dict(json.loads(capsys.readouterr().out))


def test_requests_are_listed_and_a_ready_export_shows_its_url(
    db: CommandBus, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    period = ["--from", str(TODAY - timedelta(days=3)), "--to", str(TODAY)]
    csv = _request(capsys, "exports", "request", "--tenant", "t-1", "--format", "csv", *period)
    pdf = _request(capsys, "reports", "request", "--tenant", "t-1", *period)
    also_pdf = _request(capsys, "exports", "request", "--tenant", "t-1", "--format", "pdf", *period)
    assert csv["status"] == pdf["status"] == "requested"
    load_orders(db.engine, "t-1", 3)
    with db.engine.connect() as conn:
        from domain.event_store import load_stream
        from domain.events import registry

        requested = load_stream(conn, csv["id"], registry)[0].event
    run_job(db.engine, db, "generate-sales-export", requested, csv["id"], job_config(tmp_path))
    assert main(["exports", "list", "--json"]) == EXIT_OK
    listed = {row["id"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {listed[i]["kind"] for i in (pdf["id"], also_pdf["id"])} == {"pdf"}
    assert listed[csv["id"]]["status"] == "ready"
    assert listed[csv["id"]]["url"].startswith("/downloads/t-1/")
    assert listed[pdf["id"]]["url"] is None
    assert main(["exports", "list", "--status", "ready", "--json"]) == EXIT_OK
    assert [json.loads(r)["id"] for r in capsys.readouterr().out.splitlines()] == [csv["id"]]
    assert main(["exports", "list"]) == EXIT_OK
    table = capsys.readouterr().out
    assert "sales exports" in table and "ready" in table and "pdf" in table
    assert main(["exports", "list", "--tenant", "t-2", "--json"]) == EXIT_OK
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tenant", "t-1", "--from", "2026-11-05", "--to", "2026-11-01"], "after it ends"),
        (["--tenant", "t-1", "--from", "2024-01-01", "--to", "2026-01-01"], "at most 366"),
        (["--tenant", "nobody", "--from", "2026-11-01", "--to", "2026-11-02"], "does not exist"),
        (["--tenant", "t-1", "--from", "2026-11-31", "--to", "2026-12-01"], "2026-11-31"),
        (["--tenant", "t-1", "--from", "yesterday", "--to", "2026-12-01"], "yesterday"),
        (["--tenant", "t\x01", "--from", "2026-11-01", "--to", "2026-11-02"], "control character"),
        (["--tenant", "t-1", "--from", "2999-01-01", "--to", "2999-01-02"], "after today"),
    ],
)
def test_bad_requests_exit_2_with_a_clear_message(
    db: CommandBus, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    for command in (["exports", "request", "--format", "xlsx"], ["reports", "request"]):
        capsys.readouterr()
        assert main([*command, *args]) == EXIT_USAGE
        assert says in capsys.readouterr().err
    assert main(["exports", "list", "--json"]) == EXIT_OK
    assert capsys.readouterr().out == ""


def test_an_unknown_format_is_a_usage_error(
    db: CommandBus, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["exports", "request", "--tenant", "t-1", "--format", "ods"]
    assert main([*args, "--from", "2026-11-01", "--to", "2026-11-02"]) == EXIT_USAGE
    assert "'ods' is not one of 'csv', 'xlsx', 'pdf'" in capsys.readouterr().err
