"""The short chaos run: `bench/chaos.py` at about 5,000 commands and 6 faults (`make chaos`
is the long one). Real processes through the CLI on PostgreSQL and the embedded broker;
nothing lost, effects exact, order kept, each scheduler slot once, the hostile record and the
forged ones (and nothing else) in failed jobs, the forged ones changing nothing, every
(event, endpoint) webhook pair delivered to the flapping receiver under one webhook-id and
nothing to the endpoint disabled halfway (a dispatcher killed -9 on the way), and progress
again within 60 s of every fault, with no help.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_chaos_run_keeps_every_guarantee_and_recovers_without_help(
    postgres_db: Engine, tmp_path: Path
) -> None:
    # A database of its own: the run recreates its tables.
    url = postgres_db.url.set(database=f"{postgres_db.url.database}_chaos")
    command = [
        sys.executable, str(ROOT / "bench" / "chaos.py"),
        "--commands", "5000", "--writers", "4", "--faults", "6", "--seed", "7",
        "--mix", "kill-worker,drop-database,hostile-record,pause-broker,forged-records,"
        "kill-dispatcher",
        "--duration", "60", "--drain", "90",
        "--url", url.render_as_string(hide_password=False),
        "--logs", str(tmp_path), "--json",
    ]  # fmt: skip
    # It pauses the broker: always its own embedded one, whatever broker the suite uses.
    env = {k: v for k, v in os.environ.items() if k != "OUTBOX_TEST_KAFKA_BOOTSTRAP"}
    run = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    assert run.stdout.strip(), run.stderr[-4000:]
    verdict = json.loads(run.stdout.strip().splitlines()[-1])
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log"))
    context = f"{verdict}\n{run.stderr[-3000:]}\n{logs}"
    assert verdict["writers_failed"] == 0 and verdict["commands"] >= 5000, context
    assert verdict["lost"] == 0 and verdict["pending_after_drain"] == 0, context
    assert verdict["order_violations"] == 0, context
    assert verdict["effects"] == verdict["effects_expected"] > 0, context
    assert verdict["effects_wrong"] == 0, context
    assert verdict["images_handled"] == verdict["images"] > 0, context  # the media group
    assert verdict["products_without_blurhash"] == 0, context
    assert verdict["hostile_records"] == 1, context
    assert verdict["forged_records"] == 5, context
    assert verdict["forged_failed_once"] == 5, context  # each once, with its reason
    # The hostile record and the forged ones only (the forged exports twice: the webhooks
    # group reads export-events too, and finds no such event in the store).
    assert verdict["forged_fanned"] == verdict["forged_fanned_failed"] == 3, context
    assert sum(verdict["failed_jobs"].values()) == 1 + 5 + 3, context
    forged = {k: n for k, n in verdict["failed_jobs"].items() if not k.startswith("analytics/")}
    assert forged == {
        "exports/record_mismatch": 3,  # naming chaos-b, a reversed period, 1926-today
        "webhooks/not_verified": 3,  # the same three records
        "payments/not_verified": 1,  # no webhook row
        "payments/record_mismatch": 1,  # chaos-b's order under the verified webhook's id
    }, context
    # Webhooks: every pair delivered at least once under its one webhook-id, through 500s,
    # resets and slow answers; nothing to the endpoint after it was disabled.
    hooks = verdict["webhooks"]
    assert hooks["failures"] == [], context
    assert hooks["expected"] == hooks["delivered"] > 100, context
    assert hooks["lost_count"] == hooks["other_webhook_id"] == 0, context
    assert hooks["after_disable"] == hooks["unsigned"] == 0, context
    assert hooks["disabled"] == ["/disabled"] and hooks["before_disable"] > 0, context
    assert {"ok", "500", "reset", "slow"} <= set(hooks["answers"]), context
    assert any(f["fault"].startswith("kill -9 deliver-") for f in verdict["faults"]), context
    # The forged records changed nothing.
    assert verdict["paid_order"] == "PAID", context
    assert verdict["other_tenant_order"] != "PAID", context
    assert verdict["ledger"] == verdict["ledger_expected"] == ["chaos-order:2500"], context
    assert verdict["export_status"] == "ready", context
    assert verdict["export_path"].startswith("chaos/"), context
    assert verdict["export_files"] == [verdict["export_path"]], context
    assert verdict["slots_due"] > 0 and verdict["slots_fired"] == verdict["slots_due"], context
    assert len(verdict["faults"]) == 6, context
    assert all(f["resumed_s"] is not None and f["resumed_s"] < 60 for f in verdict["faults"]), (
        context
    )
    assert all(f["published_s"] is not None for f in verdict["faults"]), context
    assert verdict["ok"] and run.returncode == 0, context
