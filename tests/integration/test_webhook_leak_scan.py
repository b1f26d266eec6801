"""The leak scan of outbound webhooks: endpoints added and rotated by the CLI, deliveries to a
hostile receiver that echoes every request back (200, 500) and to one that answers 410, with
debug logs on. Neither signing secret (nor its key bytes), the encryption key nor any
signature sent appears in a log line, the attempt log (`webhooks attempts --json`), `endpoints
list|show`, `outbox config` or a dashboard page; only `add` and `rotate-secret` print a
secret, once each."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from domain import CommandBus
from infra.db import make_engine
from outbox.schema_webhooks import webhook_attempts_table
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK
from tests.dashboard_helpers import VIEWER, client_for, dashboard_config, sign_in
from tests.outbound_helpers import make
from tests.outbound_receiver import Answer, Receiver
from tests.scenario import ensure_tenant

pytestmark = pytest.mark.integration

KEY_BYTES = base64.b64encode(os.urandom(32)).decode()
KEY = "k1:" + KEY_BYTES


class Cli:
    """`outbox ...` in this process; every output kept to be scanned."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd
        self.seen: list[str] = []

    def __call__(self, *args: str) -> str:
        self.capfd.readouterr()
        assert main(list(args)) == EXIT_OK, args
        captured = self.capfd.readouterr()
        self.seen.append(captured.out + captured.err)
        return captured.out

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json"))


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'leak.db'}"
    for name, value in {
        "DATABASE_URL": url,
        "WEBHOOK_ENCRYPTION_KEYS": KEY,
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["db", "upgrade"]) == EXIT_OK
    ensure_tenant(CommandBus(make_engine(url), shards=16), "t-1")
    return url


def _event(url: str, event_id: str) -> None:
    payload = {"order_id": "o-1", "amount_cents": 4900}
    make(make_engine(url), event_id, now=datetime.now(UTC), payload=payload)


def test_no_endpoint_secret_key_or_signature_leaks(
    db: str, capfd: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capfd)
    with Receiver() as receiver:
        receiver.answer("/echo", Answer(200, echo=True))
        receiver.answer("/fail", Answer(500, echo=True))
        receiver.answer("/gone", Answer(410, echo=True))
        add = ("webhooks", "endpoints", "add", "--tenant", "t-1", "--event", "order.*")
        added = {
            path: cli.json(*add, "--url", receiver.url(path))
            for path in ("/echo", "/fail", "/gone")
        }
        printed_once = {0, 1, 2}
        rotated = cli.json(
            "webhooks", "endpoints", "rotate-secret", added["/echo"]["endpoint"]["id"]
        )
        printed_once.add(len(cli.seen) - 1)
        _event(db, "ev-1")
        _event(db, "ev-2")
        done = cli.json("webhooks", "deliver", "--once", "--max-seconds", "30")
        assert done["delivered"] == 2 and done["failed"] >= 2, done

        secrets = [a["secret"] for a in added.values()] + [rotated["secret"]]
        signatures = [
            token.partition(",")[2]
            for received in receiver.received
            for token in received.headers["webhook-signature"].split()
        ]
        assert len(signatures) >= 5  # two signatures per delivery to the rotated endpoint
        echoed = [r for r in receiver.received if r.path == "/echo"]
        assert echoed and all(r.headers["webhook-signature"].count("v1,") == 2 for r in echoed)

        for endpoint in added.values():
            endpoint_id = endpoint["endpoint"]["id"]
            cli("webhooks", "endpoints", "show", endpoint_id, "--json")
            cli("webhooks", "attempts", "--endpoint", endpoint_id, "--json")
        cli("webhooks", "endpoints", "list", "--json")
        cli("webhooks", "attempts", "--failed", "--json")
        cli("config")

    engine = make_engine(db)
    with engine.connect() as conn:
        excerpts = [
            e
            for e in conn.execute(select(webhook_attempts_table.c.response_excerpt)).scalars()
            if e
        ]
    assert any("[signature]" in e for e in excerpts), "the echoed signatures were masked"
    assert any('"order_id": "o-1"' in e or '"order_id":"o-1"' in e for e in excerpts)
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)
    pages = [client.get("/webhooks").text]
    for endpoint in added.values():
        pages.append(client.get(f"/webhooks/endpoints/{endpoint['endpoint']['id']}").text)
    pages.append(client.get("/webhooks/events/ev-1").text)
    assert all("<html" in page.lower() for page in pages)

    scanned = [text for n, text in enumerate(cli.seen) if n not in printed_once]
    scanned += excerpts + pages
    forbidden = [KEY_BYTES, *signatures]
    for secret in secrets:
        forbidden += [secret, secret.removeprefix("whsec_")]
    for text in scanned:
        for value in forbidden:
            assert value not in text
    for n in printed_once:  # the one place a secret is shown
        assert any(secret in cli.seen[n] for secret in secrets)
