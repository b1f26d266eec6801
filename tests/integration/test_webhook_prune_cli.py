"""`outbox prune` deletes outbound webhooks' attempts and finished deliveries older than
WEBHOOK_ATTEMPT_RETENTION_S and says how many, on every backend; pending ones stay."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine

from outbound.ports import Outcome
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK
from tests.outbound_helpers import T0, add_endpoint, claim, deliveries, make, outcome, settle


def test_prune_counts_and_deletes_old_webhook_attempts_and_finished_deliveries(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    add_endpoint(engine, "ep_ok")
    add_endpoint(engine, "ep_down")
    make(engine, "ev-1")  # T0: long before the 30 days' retention
    for c in claim(engine, T0):
        settle(
            engine,
            c,
            outcome(Outcome.DELIVERED if c.endpoint_id == "ep_ok" else Outcome.FAILED, 500),
            T0,
        )
    capsys.readouterr()
    assert main(["prune", "--dry-run", "--json"]) == EXIT_OK
    planned = json.loads(capsys.readouterr().out)
    assert (planned["webhook_attempts"], planned["webhook_deliveries"]) == (2, 1)
    assert main(["prune", "--yes", "--json"]) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert (done["webhook_attempts"], done["webhook_deliveries"]) == (2, 1)
    assert [(r.endpoint_id, r.status) for r in deliveries(engine)] == [("ep_down", "pending")]
    assert main(["prune", "--yes"]) == EXIT_OK
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "deleted 0 webhook attempts and 0 finished webhook deliveries" in printed
