"""`outbox webhooks attempts|resend|recover` against a real database: the --json shapes,
filters and paging, the audit rows, and bad input as one line and exit 2 with nothing
changed. No secret (nor its ciphertext) and no e-mail address in what is printed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from outbox.types import utcnow
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK, EXIT_USAGE
from tests.webhook_ops_helpers import (
    PREVIOUS_CIPHERTEXT,
    SECRET_CIPHERTEXT,
    add_attempt,
    add_delivery,
    add_endpoint,
    audit_rows,
    delivery,
)

pytestmark = pytest.mark.integration
SQLITE_AND_POSTGRES = pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)

KEYS = {
    "id", "delivery_id", "endpoint_id", "event_id", "webhook_id", "attempt", "at",
    "duration_ms", "outcome", "status_code", "error", "response_excerpt",
}  # fmt: skip


@pytest.fixture
def cli_db(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        add_endpoint(conn, "ep_a", now)
        add_endpoint(conn, "ep_off", now, state="disabled", disabled_reason="answered 410")
        failed = add_delivery(conn, "ev-1", "ep_a", now - timedelta(hours=1))
        other = add_delivery(conn, "ev-2", "ep_a", now - timedelta(days=2))
        for n in range(4):
            add_attempt(
                conn, failed, now - timedelta(minutes=40 - n), outcome="failed", attempt=n + 1,
                response_excerpt="no such user carol@example.com\x1b[31m",
            )  # fmt: skip
        add_attempt(conn, other, now - timedelta(days=2))
    return {"failed": failed, "other": other}


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


@SQLITE_AND_POSTGRES
def test_attempts_json_filters_and_pages(
    cli_db: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["webhooks", "attempts", "--json"]) == EXIT_OK
    rows = _json(capsys)
    assert isinstance(rows, list) and len(rows) == 5
    assert set(rows[0]) == KEYS
    assert rows[0]["outcome"] == "failed" and rows[0]["attempt"] == 4
    assert "carol@example.com" not in json.dumps(rows)
    assert main(["webhooks", "attempts", "--json", "--since", "2h"]) == EXIT_OK
    recent = _json(capsys)
    assert isinstance(recent, list) and {r["event_id"] for r in recent} == {"ev-1"}
    assert main(["webhooks", "attempts", "--json", "--failed", "--event", "ev-2"]) == EXIT_OK
    assert _json(capsys) == []
    assert main(["webhooks", "attempts", "--json", "--limit", "2"]) == EXIT_OK
    first = _json(capsys)
    assert isinstance(first, list)
    before = str(first[-1]["id"])
    assert main(["webhooks", "attempts", "--json", "--limit", "10", "--before", before]) == 0
    rest = _json(capsys)
    assert isinstance(rest, list)
    assert [r["id"] for r in first + rest] == [r["id"] for r in rows]


@SQLITE_AND_POSTGRES
def test_attempts_table_shows_no_secret_and_no_control_character(
    cli_db: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["webhooks", "attempts", "--endpoint", "ep_a", "--limit", "2"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "ev-1" in printed and "older: --before" in printed
    assert "\x1b" not in printed
    for secret in (SECRET_CIPHERTEXT, PREVIOUS_CIPHERTEXT, "carol@example.com"):
        assert secret not in printed


@SQLITE_AND_POSTGRES
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["attempts", "--since", "yesterday"], "--since"),
        (["attempts", "--since", "99999999999999d"], "--since"),
        (["attempts", "--limit", "0"], "--limit"),
        (["attempts", "--endpoint", "x" * 41], "--endpoint"),
        (["resend", "ev-1", "--endpoint", "ep_a"], "--reason"),
        (["resend", "ev-9", "--endpoint", "ep_a", "--reason", "r"], "no delivery of event"),
        (["resend", "ev-1", "--endpoint", "ep_off", "--reason", "r"], "is disabled"),
        (["recover", "--endpoint", "ep_a", "--since", "6 hours", "--reason", "r"], "--since"),
        (["recover", "--endpoint", "ep_nope", "--since", "6h", "--reason", "r"], "no webhook"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_and_changes_nothing(
    cli_db: dict[str, int],
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    assert main(["webhooks", *args]) == EXIT_USAGE
    said = capsys.readouterr().err.strip()
    # Ours: one `error:` line (the console wraps it at its width). Click's own (a bad
    # --limit) adds its usage lines before it.
    assert said.startswith(("error:", "Usage:")), said
    assert says in " ".join(said.split()), said
    assert "Traceback" not in said
    assert delivery(engine, cli_db["failed"]).status == "failed"
    assert audit_rows(engine, "webhook-resend") == audit_rows(engine, "webhook-recover") == []


@SQLITE_AND_POSTGRES
def test_resend_and_recover_json_and_audit(
    cli_db: dict[str, int], engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["webhooks", "resend", "ev-2", "--endpoint", "ep_a", "--reason", "INC-9", "--json"]
    assert main([*args, "--actor", "olga"]) == EXIT_OK
    assert _json(capsys) == {"event_id": "ev-2", "endpoint_id": "ep_a", "resent": True}
    assert delivery(engine, cli_db["other"]).status == "pending"
    (audit,) = audit_rows(engine, "webhook-resend")
    assert (audit.actor, audit.reason) == ("olga", "INC-9")
    args = ["webhooks", "recover", "--endpoint", "ep_a", "--since", "6h", "--reason", "INC-9"]
    assert main([*args, "--json"]) == EXIT_OK
    answer = _json(capsys)
    assert isinstance(answer, dict) and answer["recovered"] == 1
    assert set(answer) == {"endpoint_id", "since", "recovered"}
    assert delivery(engine, cli_db["failed"]).attempts == 0
    assert main(args) == EXIT_OK  # again, as text: nothing failed is left
    assert capsys.readouterr().out.startswith("0 failed delivery(ies) of ep_a")
    assert len(audit_rows(engine, "webhook-recover")) == 2
