"""`outbox webhooks deliver --once` with the real pieces wired together: endpoints added by
the CLI (secrets encrypted under WEBHOOK_ENCRYPTION_KEYS), deliveries made by the store,
the SSRF-checked sender, and a real local receiver that checks every signature with the
official `standardwebhooks` package; a rotation signs with both secrets; a 410 disables."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from domain import CommandBus
from infra.db import make_engine
from outbox.schema_webhooks import webhook_deliveries_table, webhook_endpoints_table
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK
from tests.outbound_helpers import make
from tests.outbound_receiver import Answer, Receiver
from tests.scenario import ensure_tenant

pytestmark = pytest.mark.integration

KEY = "k1:" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'deliver.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("WEBHOOK_ENCRYPTION_KEYS", KEY)
    monkeypatch.setenv("WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32")
    assert main(["db", "upgrade"]) == EXIT_OK
    ensure_tenant(CommandBus(make_engine(url), shards=16), "t-1")
    return url


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main(["webhooks", *args, "--json"]) == EXIT_OK
    return json.loads(capsys.readouterr().out)


def _event(url: str, event_id: str) -> None:
    payload = {"order_id": "o-1", "amount_cents": 4900}
    make(make_engine(url), event_id, now=datetime.now(UTC), payload=payload)


def test_deliver_signs_sends_and_records_with_the_real_pieces(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Receiver() as receiver:
        receiver.answer("/ok", Answer(200))
        receiver.answer("/gone", Answer(410))
        ok = _cli(capsys, "endpoints", "add", "--tenant", "t-1", "--url", receiver.url("/ok"),
                  "--event", "order.*")  # fmt: skip
        gone = _cli(capsys, "endpoints", "add", "--tenant", "t-1", "--url",
                    receiver.url("/gone"), "--event", "order.paid")  # fmt: skip
        _event(db, "ev-1")

        done = _cli(capsys, "deliver", "--once", "--max-seconds", "30")
        assert done == {"delivered": 1, "failed": 1, "unrecorded": 0}  # the 410 is not delivered

        [got] = receiver.on("/ok")
        payload = Webhook(ok["secret"]).verify(got.body, got.headers)
        assert payload["id"] == "ev-1" and payload["type"] == "order.paid"
        assert payload["data"]["order_id"] == "o-1"
        assert len(receiver.on("/gone")) == 1
        engine = make_engine(db)
        with engine.connect() as conn:
            states = dict(
                conn.execute(
                    select(webhook_endpoints_table.c.id, webhook_endpoints_table.c.state)
                ).all()
            )
        assert states == {ok["endpoint"]["id"]: "enabled", gone["endpoint"]["id"]: "disabled"}

        # A rotation: both secrets sign during the overlap, so a receiver on either verifies.
        rotated = _cli(capsys, "endpoints", "rotate-secret", ok["endpoint"]["id"])
        new_secret = rotated.get("secret")
        assert isinstance(new_secret, str) and new_secret != ok["secret"]
        _event(db, "ev-2")
        assert _cli(capsys, "deliver", "--once")["delivered"] == 1
        second = receiver.on("/ok")[1]
        assert second.headers["webhook-signature"].count("v1,") == 2
        for secret in (ok["secret"], new_secret):
            assert Webhook(secret).verify(second.body, second.headers)["id"] == "ev-2"
        with engine.connect() as conn:
            statuses = sorted(conn.execute(select(webhook_deliveries_table.c.status)).scalars())
        # The 410 disabled its endpoint and cancelled the delivery (nothing more goes there).
        assert statuses == ["cancelled", "delivered", "delivered"]


def test_deliver_refuses_a_private_destination_without_the_allowlist(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Receiver() as receiver:
        receiver.answer("/ok", Answer(200))
        _cli(capsys, "endpoints", "add", "--tenant", "t-1", "--url", receiver.url("/ok"),
             "--event", "*")  # fmt: skip
        _event(db, "ev-3")
        monkeypatch.delenv("WEBHOOK_ALLOW_NETWORKS")

        done = _cli(capsys, "deliver", "--once")

        assert done == {"delivered": 0, "failed": 1, "unrecorded": 0}
        assert receiver.on("/ok") == []
        with make_engine(db).connect() as conn:
            row = conn.execute(select(webhook_deliveries_table)).one()
        assert row.status == "failed"
        assert row.last_error is not None and row.last_error.startswith("refused: ")
        assert "127.0.0.1" in row.last_error, "the reason names the address refused"
