"""The `outbox` CLI: named exit codes, clear errors, JSON for scripts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infra.migrate import head_revision
from jobs.blurhash import compute_blurhash
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_CONFIG, EXIT_DB_UNREACHABLE, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def test_db_upgrade_then_current(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade"]) == EXIT_OK
    assert main(["db", "current"]) == EXIT_OK
    assert head_revision() in capsys.readouterr().out


def test_bad_configuration_exits_3_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTBOX_SHARDS", "-1")
    assert main(["db", "upgrade"]) == EXIT_CONFIG
    assert "OUTBOX_SHARDS" in capsys.readouterr().err


def test_unreachable_database_exits_4(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"
    )
    assert main(["db", "upgrade"]) == EXIT_DB_UNREACHABLE
    assert "database unreachable" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == EXIT_USAGE
    assert "No such command" in capsys.readouterr().err


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    assert "4 database unreachable" in capsys.readouterr().out


def test_projections_rebuild_json(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from domain import CommandBus
    from infra.db import make_engine
    from tests.scenario import run_full_scenario

    assert main(["db", "upgrade"]) == EXIT_OK
    run_full_scenario(CommandBus(make_engine(sqlite_url), shards=4))
    capsys.readouterr()
    assert main(["projections", "rebuild", "--yes", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"events_replayed": 30}


def test_config_json_masks_the_webhook_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", "whsec_live_123")
    assert main(["config", "--json"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "whsec_live_123" not in printed
    assert json.loads(printed)["PAYMENT_WEBHOOK_SECRET"] == "********"


def test_demo_runs_on_a_fresh_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_DIR", str(tmp_path / "storage"))
    assert main(["demo", "--database-url", f"sqlite:///{tmp_path}/demo.db"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "22 events stored, 22 outbox rows pending" in printed
    assert "refused, nothing written" in printed
    # The consumer groups ran: a BlurHash for the real image, the damaged one failed.
    assert "rocket.jpg is not a readable image" in printed
    assert compute_blurhash(tmp_path / "storage" / "anvil.png") in printed
    assert "│ analytics │ sync-tenant-analytics     │ done   │ 1" in printed
    assert "│ analytics │ record-interaction        │ done   │ 3" in printed
    charted = re.search(r"the dashboard's charts: (\d+) rollup rows", printed)
    assert charted is not None and int(charted.group(1)) >= 3  # a minute, quarter-hour, 4 h
    # The scheduler part: each periodic job ran once through the outbox and its group.
    assert "release-stale-orders: ord-4 is CANCELLED" in printed
    assert "anvil stock 1 -> 3" in printed
    assert "Reminder: Anvil fitting" in printed and "w***@example.com" in printed
    assert "wile@example.com" not in printed.split("scheduler: periodic jobs")[1]
    assert printed.count("tenant.limit_exceeded") == 2
    assert "5 scheduled job runs in the inbox" in printed
    # Outbound webhooks: signed, verified by the receiver; a 500 retried, a 410 disables the
    # endpoint, the metadata address refused with its reason; the order's e-mail and SMS.
    hooks = printed.split("outbound webhooks and order-status notifications")[1]
    flat = " ".join(hooks.split())
    assert "WEBHOOK_ALLOW_HTTP=true and WEBHOOK_ALLOW_NETWORKS=127.0.0.1/32" in flat
    for row in (
        r"│ /ok +│ 200 +│ 1 +│ 1 of 1 +│ 1 +│ delivered +│",
        r"│ /flaky +│ 500, then 200 +│ 2 +│ 2 of 2 +│ 2 +│ retried after 500, delivered +│",
        r"│ /gone +│ 410 +│ 1 +│ 1 of 1 +│ 1 +│ endpoint disabled by 410 +│",
        r"│ 169\.254\.169\.254 +│ - +│ 0 +│ - +│ 1 +│ refused \(SSRF policy\) +│",
    ):
        assert re.search(row, hooks), row
    assert "refused: 169.254.169.254 is link-local (cloud metadata lives there)" in flat
    assert re.search(
        r"│ e-mail +│ m\*\*\*@example\.com +│ Globex Gadgets: your order ord-wh-1", hooks
    )
    assert re.search(
        r"│ SMS +│ \+\*\*\*71 +│ Globex Gadgets: your order ord-wh-1 was placed", hooks
    )
    assert "order ord-wh-1: 1 e-mail(s) and 1 SMS to its customer" in flat
    assert "whsec_" not in printed and "4155552671" not in hooks and "marvin@" not in hooks
