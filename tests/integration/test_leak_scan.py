"""A leak scan: the scenario and the tooling run with a password in DATABASE_URL and the
SMTP and webhook secrets set; none of them, and no full customer e-mail address, appears in
any log line, in `config`, `failed show` (with `--payload` too), `coroner --message`,
`privacy erase` or (secrets) in an archive."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from consumers import store
from domain import CommandBus
from infra.db import make_engine
from infra.logs import configure_logging
from outbox import OutboxStatus, outbox_table
from outbox.types import utcnow
from tests import incident_helpers
from tests.scenario import run_full_scenario

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("DbPw-leak-7f3a", "SmtpPw-leak-91c2", "WhSec-leak-5d0e")
ADDRESSES = ("ann@example.com", "bob@example.com", "cy@example.com", "wile.e@example.com")


def _outbox(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_no_secret_and_no_full_address_leaks_anywhere(
    postgres_db: Engine, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # PostgreSQL here trusts local connections, so any password logs in: a real URL shape.
    url = make_url(postgres_db.url.render_as_string(hide_password=False)).set(password=SECRETS[0])
    url_text = url.render_as_string(hide_password=False)
    engine = make_engine(url_text)
    env = {
        **os.environ,
        "DATABASE_URL": url_text,
        "SMTP_PASSWORD": SECRETS[1],
        "PAYMENT_WEBHOOK_SECRET": SECRETS[2],
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "CONSUMER_DEDUP_WINDOW_S": "3600",
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    configure_logging("debug", "json")
    run_full_scenario(CommandBus(engine, shards=8))
    with engine.begin() as conn:
        failed = store.insert_failed(
            conn,
            {
                "group_name": "notifications",
                "job_name": "send-appointment-reminder",
                "event_id": "e-1",
                "type": "appointment.reminder_due",
                "topic": "notifications.jobs",
                "kafka_partition": 0,
                "kafka_offset": 1,
                "message_key": "a-1",
                "payload": json.dumps({"to": ADDRESSES[3]}),
                "payload_encoding": "utf-8",
                "headers": "{}",
                "reason": "exception",
                "exception_class": "SMTPRecipientsRefused",
                "exception_message": f"{ADDRESSES[3]} refused; login {SECRETS[1]!r}",
                "traceback": f'  File "reminders.py"\nSMTPRecipientsRefused: {ADDRESSES[3]}',
                "attempts": 3,
                "failed_at": utcnow(),
            },
        )
        order_row = conn.execute(
            select(outbox_table.c.id).where(outbox_table.c.key == "o-1").limit(1)
        ).scalar_one()
    ids = incident_helpers.ids_of(engine)
    assert ids
    incident_helpers.age_rows(engine, ids, days=3, status=OutboxStatus.PUBLISHED)
    archive = tmp_path / "old.jsonl.gz"
    outputs = [
        _outbox(env, "config"),
        _outbox(env, "config", "--json"),
        _outbox(env, "coroner", "--no-kafka", "--json"),
        _outbox(env, "coroner", "--message", str(order_row)),
        _outbox(env, "failed", "list"),
        _outbox(env, "failed", "show", str(failed)),
        _outbox(env, "failed", "show", str(failed), "--json"),
        _outbox(env, "prune", "--older-than", "1d", "--archive", str(archive), "--yes"),
        _outbox({**env, "DATABASE_URL": f"oracle://u:{SECRETS[0]}@h/d"}, "config"),
        # The payload, when asked for, is masked as the dashboard shows it.
        _outbox(env, "failed", "show", str(failed), "--payload"),
        _outbox(env, "failed", "show", str(failed), "--payload", "--json"),
        # An erasure prints counts and its reference, never the address.
        _outbox(env, "privacy", "erase", "--email", ADDRESSES[0], "--reason", "r", "--yes"),
    ]
    logs = capfd.readouterr()
    scanned = "\n".join([*outputs, logs.out, logs.err])
    for secret in SECRETS:
        assert secret not in scanned
    for address in ADDRESSES:
        assert address not in scanned
    assert "erasure " in outputs[-1] and "orders: 1" in outputs[-1], outputs[-1]
    assert archive.exists() and stat.S_IMODE(archive.stat().st_mode) == 0o600
    with gzip.open(archive, "rt") as rows:
        archived = rows.read()
    assert archived, outputs[7]  # the scenario's old rows were archived before they were deleted
    for secret in SECRETS:
        assert secret not in archived
    engine.dispose()
