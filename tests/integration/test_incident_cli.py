"""The incident commands as operators and scripts run them: JSON, exit codes, refusals."""

from __future__ import annotations

import getpass
import gzip
import json
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import Engine, func, select, update

from domain import CommandBus
from outbox import OutboxStatus, outbox_table
from outbox.schema import replays_table
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pipeline.demo.main import _print_status
from tests import incident_helpers
from tests.incident_helpers import age_rows, ids_of, snapshot
from tests.kafka_helpers import envelopes, insert
from tests.scenario import run_full_scenario

pytestmark = [pytest.mark.integration, incident_helpers.SQLITE_AND_POSTGRES]

o = outbox_table
db = incident_helpers.db
cli_db = incident_helpers.cli_db


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def rows(cli_db: Engine) -> list[int]:
    """Two keys: 6 published rows ten days old, then 2 pending rows."""
    insert(cli_db, envelopes("order-events", keys=2, per_key=4), shards=16)
    ids = ids_of(cli_db)
    age_rows(cli_db, ids[:6], days=10, status=OutboxStatus.PUBLISHED)
    return ids


BAD_INPUT = [
    ["coroner", "--older-than", "soon"],
    ["coroner", "--message", "999999"],
    ["coroner", "--key", "no-such-key"],
    ["coroner", "--message", "1", "--key", "agg-0"],
    ["park", "--key", ""],
    ["release", "--key", "agg-0"],  # not parked
    ["skip", "--message", "999999"],
    ["skip", "--message", "{published}"],
    ["requeue", "--message", "{pending}"],
    ["audit", "--since", "last tuesday"],
    ["replay", "--from-id", "5", "--to-id", "2", "--yes"],
    ["replay", "--since", "2h", "--until", "3h", "--yes"],
    ["replay", "--since", "2026-13-45", "--yes"],
    ["replay", "--until", "tomorrow", "--yes"],
    ["replay", "--topic", "no-such-topic", "--yes"],
    ["replay", "--from-id", "0", "--yes"],
    ["replay", "--yes"],  # no filter: refuses to replay everything
    ["replay", "--key", "agg-0"],  # no terminal to confirm, no --yes
    ["prune", "--older-than", "a week", "--yes"],
    ["prune", "--older-than", "0s", "--yes"],
    ["prune", "--batch-size", "0", "--yes"],
    ["prune", "--older-than", "1d"],  # no terminal to confirm, no --yes
    ["prune", "--yes", "--archive", "{existing}"],
]


@pytest.mark.parametrize("argv", BAD_INPUT, ids=" ".join)
def test_bad_input_exits_2_with_a_message_and_changes_nothing(
    argv: list[str],
    rows: list[int],
    cli_db: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    existing = tmp_path / "exists.jsonl.gz"
    existing.write_bytes(b"")
    values = {"published": str(rows[0]), "pending": str(rows[-1]), "existing": str(existing)}
    argv = [a.format(**values) for a in argv]
    before = snapshot(cli_db)

    assert main(argv) == EXIT_USAGE

    assert capsys.readouterr().err.strip()  # one clear line on stderr
    assert snapshot(cli_db) == before
    assert existing.read_bytes() == b""


def test_park_skip_requeue_release_are_audited_with_actor_and_reason(
    rows: list[int], cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    head = rows[-2]  # agg-0's pending row
    assert main(["park", "--key", "agg-0", "--actor", "alice", "--reason", "poison", "--json"]) == 0
    assert _json(capsys) == {
        "action": "park", "target": "key:agg-0", "changed": True, "rows": 1, "note": "",
    }  # fmt: skip
    assert main(["coroner", "--key", "agg-0", "--json"]) == EXIT_OK
    story = _json(capsys)
    assert story["parked"]["actor"] == "alice"  # type: ignore[index]
    assert story["head"]["id"] == head  # type: ignore[index]
    assert story["head"]["payload"] is None  # type: ignore[index]  # never without --payload

    assert main(["skip", "--message", str(head), "--reason", "bad payload"]) == EXIT_OK
    assert main(["requeue", "--message", str(head), "--actor", "bob"]) == EXIT_OK
    assert main(["release", "--key", "agg-0", "--actor", "alice"]) == EXIT_OK
    capsys.readouterr()

    assert main(["audit", "--json"]) == EXIT_OK
    log = _json(capsys)
    assert [(e["action"], e["target"], e["actor"]) for e in log] == [  # type: ignore[union-attr]
        ("release", "key:agg-0", "alice"),
        ("requeue", f"message:{head}", "bob"),
        ("skip", f"message:{head}", getpass.getuser()),  # the OS user without --actor
        ("park", "key:agg-0", "alice"),
    ]
    assert log[2]["reason"] == "bad payload"  # type: ignore[index]
    assert log[3]["reason"] == "poison"  # type: ignore[index]
    assert ids_of(cli_db, o.c.status == OutboxStatus.PENDING) == rows[-2:]


def test_coroner_exit_code_follows_the_state(
    rows: list[int], cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    age_rows(cli_db, rows[-2:], days=1)  # two pending rows a day old
    assert main(["coroner", "--no-kafka", "--json"]) == EXIT_FAILED
    report = json.loads(capsys.readouterr().out)
    assert report["stuck"] is True
    assert report["old_pending"] == 2

    assert main(["skip", "--message", str(rows[-2]), "--yes"]) == EXIT_USAGE  # no such option
    for outbox_id in rows[-2:]:
        assert main(["skip", "--message", str(outbox_id)]) == EXIT_OK
    capsys.readouterr()
    assert main(["coroner", "--no-kafka", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert (report["stuck"], report["dead"]) == (False, 2)

    assert main(["coroner", "--message", str(rows[0]), "--json"]) == EXIT_OK
    story = json.loads(capsys.readouterr().out)
    assert (story["status"], story["kafka_partition"], story["kafka_offset"]) == ("published", 0, 0)


def test_replay_dry_run_previews_and_changes_nothing(
    rows: list[int], cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(cli_db)
    argv = ["replay", "--since", "30d", "--topic", "order-events", "--dry-run", "--json"]
    assert main(argv) == EXIT_OK
    assert _json(capsys) == {
        "dry_run": True, "count": 6, "first_id": rows[0], "last_id": rows[5],
        "by_topic": {"order-events": 6},
    }  # fmt: skip
    assert snapshot(cli_db) == before

    assert main(["replay", "--key", "agg-1", "--yes", "--rerun", "--json"]) == EXIT_OK
    result = _json(capsys)
    assert result["count"] == 3  # type: ignore[index]
    assert len(ids_of(cli_db, o.c.replay_id == result["replay_id"])) == 3  # type: ignore[index]


def test_prune_cli_archives_then_deletes_and_dry_run_counts(
    rows: list[int], cli_db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prune", "--older-than", "1d", "--dry-run", "--json"]) == EXIT_OK
    plan = _json(capsys)
    assert plan["outbox_rows"] == 6  # type: ignore[index]
    assert plan["retention_extended_to_dedup_window"] is True  # type: ignore[index]
    archive = tmp_path / "old.jsonl.gz"

    argv = ["prune", "--older-than", "1d", "--yes", "--archive", str(archive), "--json"]
    assert main(argv) == EXIT_OK

    assert _json(capsys)["outbox_rows"] == 6  # type: ignore[index]
    assert ids_of(cli_db) == rows[-2:]  # the pending rows stay
    with gzip.open(archive, "rt") as fh:
        assert [json.loads(line)["id"] for line in fh] == rows[:6]


def test_replay_filters_by_aggregate_type_event_type_and_time(
    cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real write-path rows (aggregate_type header, routed topics), all published."""
    run_full_scenario(CommandBus(cli_db, shards=16))
    with cli_db.begin() as conn:
        conn.execute(update(o).values(status=OutboxStatus.PUBLISHED))
        by_topic = dict(
            conn.execute(select(o.c.topic, func.count()).group_by(o.c.topic)).all()  # type: ignore[arg-type]
        )
        placed = conn.execute(select(func.count()).where(o.c.type == "order.placed")).scalar_one()

    def preview(*argv: str) -> dict[str, object]:
        assert main(["replay", *argv, "--dry-run", "--json"]) == EXIT_OK
        # The last line: the command bus's log lines may reach the captured stdout late.
        return json.loads(capsys.readouterr().out.splitlines()[-1])  # type: ignore[no-any-return]

    assert preview("--aggregate", "order")["by_topic"] == {"order-events": by_topic["order-events"]}
    assert preview("--type", "order.placed")["count"] == placed > 0
    assert preview("--since", "1h", "--until", "2999-01-01")["count"] == sum(by_topic.values())
    assert preview("--until", "1h")["count"] == 0  # everything is younger than an hour


def test_the_demo_ends_with_the_status_screen(rows: list[int], cli_db: Engine) -> None:
    console = Console(record=True, width=120)
    _print_status(cli_db, None, console)
    screen = console.export_text()
    assert "`outbox status`" in screen
    assert "outbox backlog" in screen
    assert "order-events" in screen


def test_replays_list_and_close_an_abandoned_replay(
    rows: list[int], cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--from-id", str(rows[0]), "--to-id", str(rows[2]), "--yes"]) == EXIT_OK
    capsys.readouterr()
    # Its process "died" while running: put it back in that state.
    with cli_db.begin() as conn:
        conn.execute(update(replays_table).values(status="running", copies_last_id=None))
    assert main(["replays", "list", "--json"]) == EXIT_OK
    [listed] = _json(capsys)  # type: ignore[misc]
    assert (listed["status"], listed["count"]) == ("running", 3)
    replay_id = listed["id"]
    assert main(["replays", "close", replay_id]) == EXIT_USAGE  # no terminal, no --yes
    assert "pass --yes" in capsys.readouterr().err
    args = ["replays", "close", replay_id, "--yes", "--reason", "process gone", "--json"]
    assert main(args) == EXIT_OK
    closed = _json(capsys)
    assert closed == {
        "replay_id": replay_id,
        "status": "interrupted",
        "copies": 3,
        "copies_last_id": max(ids_of(cli_db)),
        "was": "running",
    }
    assert main(["replays", "close", replay_id, "--yes"]) == EXIT_USAGE  # not running now
    assert "is interrupted, not running" in capsys.readouterr().err
    assert main(["audit", "--json", "--action", "replay-close"]) == EXIT_OK
    [entry] = _json(capsys)  # type: ignore[misc]
    assert (entry["target"], entry["reason"]) == (f"replay:{replay_id}", "process gone")


def test_coroner_shows_a_replay_left_running_without_calling_it_stuck(
    rows: list[int], cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--from-id", str(rows[0]), "--to-id", str(rows[1]), "--yes"]) == EXIT_OK
    with cli_db.begin() as conn:
        conn.execute(update(o).values(status=OutboxStatus.PUBLISHED))  # nothing else pending
        conn.execute(update(replays_table).values(status="running"))
    capsys.readouterr()
    assert main(["coroner", "--no-kafka", "--json"]) == EXIT_OK
    found = _json(capsys)
    assert isinstance(found, dict)
    [running] = found["running_replays"]
    assert (running["rows"], found["stuck"]) == (2, False)
    assert main(["coroner", "--no-kafka"]) == EXIT_OK
    assert "replays still running" in capsys.readouterr().out
