"""`outbox webhooks endpoints ...` on a real SQLite database: the secret is printed once by
`add` and once by `rotate-secret`, and never by `list`, `show`, `--json`, `config`, the logs
or in the database file; bad input exits 2 with one line, a missing key exits 3."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from standardwebhooks import Webhook

from domain import CommandBus
from infra.db import make_engine
from outbound import endpoints as store
from outbox.audit import entries
from outbox.schema import audit_log_table
from outbox.schema_webhooks import webhook_endpoints_table
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_CONFIG, EXIT_OK, EXIT_USAGE
from pipeline.settings import load_settings
from pipeline.settings_webhooks import secret_box
from tests.scenario import ensure_tenant

pytestmark = pytest.mark.integration

K1 = "k1:" + base64.b64encode(os.urandom(32)).decode()
K2 = "k2:" + base64.b64encode(os.urandom(32)).decode()
URL = "https://hooks.example/in"
ENDPOINTS = ["webhooks", "endpoints"]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("WEBHOOK_ENCRYPTION_KEYS", K1)
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert main(["db", "upgrade"]) == EXIT_OK
    ensure_tenant(CommandBus(make_engine(f"sqlite:///{path}"), shards=16), "t-1")
    return path


class Run:
    """`outbox webhooks endpoints ...`, each run's stdout and stderr kept."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.seen: list[str] = []

    def __call__(self, *args: str, code: int = EXIT_OK) -> tuple[str, str]:
        self.capsys.readouterr()
        assert main([*ENDPOINTS, *args]) == code
        done = self.capsys.readouterr()
        self.seen.append(done.out + done.err)
        return done.out, done.err

    def json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self(*args, "--json")[0]))


def test_the_secret_is_shown_once_and_never_again(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Run(capsys)
    out, err = run(
        "add",
        "--tenant",
        "t-1",
        "--url",
        URL,
        "--event",
        "order.*",
        "--event",
        "order.paid",
        "--rate-limit",
        "2",
        "--description",
        "ERP",
    )
    secret = out.split("signing secret (v1): ")[1].strip()
    endpoint_id = out.split()[1]
    assert secret.startswith("whsec_") and "not shown" in err and secret not in err
    added = run.json("add", "--tenant", "t-1", "--url", URL, "--event", "*", "--signing", "v1a")
    assert str(added["public_key"]).startswith("whpk_") and added["shown_once"] is True
    v1a_id = added["endpoint"]["id"]
    listed = [json.loads(line) for line in run("list", "--json")[0].splitlines()]
    assert [e["id"] for e in listed] == [endpoint_id, v1a_id]
    assert listed[0]["event_types"] == ["order.*", "order.paid"]
    assert set(listed[0]) == {
        "id",
        "tenant_id",
        "url",
        "event_types",
        "ordered",
        "rate_limit_per_s",
        "signing",
        "state",
        "paused_until",
        "description",
    }
    table = run("list", "--tenant", "t-1")[0]
    assert "webhook endpoints" in table and "enabled" in table
    shown = run.json("show", endpoint_id)
    assert shown["rate_limit_per_s"] == 2.0 and shown["previous_secret_until"] is None
    assert "ERP" in run("show", endpoint_id)[0]
    rotated_out, _ = run("rotate-secret", endpoint_id, "--overlap", "2h", "--reason", "leak drill")
    rotated = rotated_out.split("signing secret (v1): ")[1].strip()
    printed_once = {0, len(run.seen) - 1}  # add, and rotate-secret
    assert rotated != secret
    assert run.json("show", endpoint_id)["previous_secret_until"] is not None
    keys = _signing_keys(db, endpoint_id)
    assert [Webhook(s).sign("msg_1", NOW, b"{}") for s in (rotated, secret)] == [
        Webhook("whsec_" + base64.b64encode(k).decode()).sign("msg_1", NOW, b"{}") for k in keys
    ]
    assert run.json("disable", endpoint_id, "--reason", "tenant asked") == {
        "id": endpoint_id,
        "state": "disabled",
        "cancelled_deliveries": 0,
    }
    assert run.json("show", endpoint_id)["disabled_reason"] == "tenant asked"
    assert "enabled" in run("enable", endpoint_id)[0]
    assert run.json("remove", v1a_id, "--yes")["removed"] is True
    run("show", v1a_id, code=EXIT_USAGE)
    config = run("list")[0] + _config(capsys)
    assert secret in run.seen[0] and rotated in run.seen[max(printed_once)]
    others = [text for n, text in enumerate(run.seen) if n not in printed_once]
    for text in [*others, config]:
        for value in (secret, rotated, secret[6:], rotated[6:], K1.partition(":")[2]):
            assert value not in text
    stored = b"".join(p.read_bytes() for p in db.parent.glob(f"{db.name}*"))  # -wal too
    assert b"gcm1:k1:" in stored
    for value in (secret, rotated, secret[6:], rotated[6:]):
        assert value.encode() not in stored
    with make_engine(f"sqlite:///{db}").connect() as conn:
        actions = [e.action for e in entries(conn, target=f"webhook_endpoint:{endpoint_id}")]
    assert actions == [
        "webhook_endpoint_enable",
        "webhook_endpoint_disable",
        "webhook_endpoint_rotate_secret",
        "webhook_endpoint_add",
    ]


NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def _signing_keys(db: Path, endpoint_id: str) -> list[bytes]:
    box = secret_box(load_settings())
    with make_engine(f"sqlite:///{db}").connect() as conn:
        return [k.material for k in store.signing_keys(conn, box, endpoint_id, datetime.now(UTC))]


def _config(capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["config"]) == EXIT_OK
    done = capsys.readouterr()
    assert "WEBHOOK_ENCRYPTION_KEYS" in done.out
    return done.out + done.err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "http://hooks.example/"], "scheme must be https"),
        (["--url", "https://user:pw@hooks.example/"], "user information"),
        (["--url", "https://hooks.example/" + "a" * 10_000], "at most 2,048"),
        (["--url", "https://😀.example/"], "internationalised domain name"),
        (["--event", "Order.Paid"], "no event type"),
        (["--event", "payment.webhook_received"], "never sent"),
        (["--rate-limit", "0"], "--rate-limit"),
        (["--rate-limit", "5000"], "--rate-limit"),
        (["--rate-limit", "nan"], "--rate-limit"),
        (["--signing", "v2"], "--signing"),
        (["--tenant", "nobody"], "tenant 'nobody' does not exist"),
    ],
)
def test_a_bad_add_exits_2_with_one_line(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    run = Run(capsys)
    base = {"--tenant": "t-1", "--url": URL, "--event": "order.paid"}
    base.update(zip(args[::2], args[1::2], strict=True))
    _, err = run("add", *[part for pair in base.items() for part in pair], code=EXIT_USAGE)
    assert says in err and "Traceback" not in err
    assert run("list", "--json")[0] == ""


@pytest.mark.parametrize(
    "args",
    [
        ["show", "ep_nope"],
        ["disable", "ep_nope", "--reason", "x"],
        ["enable", "ep_nope"],
        ["rotate-secret", "ep_nope"],
        ["remove", "ep_nope", "--yes"],
    ],
)
def test_an_unknown_endpoint_exits_2(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    _, err = Run(capsys)(*args, code=EXIT_USAGE)
    assert "no webhook endpoint with id 'ep_nope'" in err


def test_disable_needs_a_reason_and_remove_a_confirmation(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Run(capsys)
    endpoint_id = run.json("add", "--tenant", "t-1", "--url", URL, "--event", "*")["endpoint"]["id"]
    assert "--reason" in run("disable", endpoint_id, code=EXIT_USAGE)[1]
    assert "--yes" in run("remove", endpoint_id, code=EXIT_USAGE)[1]
    assert "--overlap" in run("rotate-secret", endpoint_id, "--overlap", "soon", code=EXIT_USAGE)[1]
    assert run.json("show", endpoint_id)["state"] == "enabled"


def test_the_master_keys_rotate_and_a_missing_one_is_a_configuration_error(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(capsys)
    endpoint_id = run.json("add", "--tenant", "t-1", "--url", URL, "--event", "*")["endpoint"]["id"]
    other_id = run.json("add", "--tenant", "t-1", "--url", URL, "--event", "*")["endpoint"]["id"]
    monkeypatch.setenv("WEBHOOK_ENCRYPTION_KEYS", f"{K2},{K1}")
    run("rotate-secret", endpoint_id, "--overlap", "1h")  # decrypts under k1, writes under k2
    monkeypatch.setenv("WEBHOOK_ENCRYPTION_KEYS", K2)  # k1 retired too early: other_id is under it
    _, err = run("rotate-secret", other_id, code=EXIT_CONFIG)
    assert "'k1'" in err and "WEBHOOK_ENCRYPTION_KEYS" in err
    monkeypatch.setenv("WEBHOOK_ENCRYPTION_KEYS", f"{K2},{K1}")
    assert run.json("reencrypt", "--reason", "retire k1") == {"reencrypted": 1, "kid": "k2"}
    monkeypatch.setenv("WEBHOOK_ENCRYPTION_KEYS", K2)
    run("rotate-secret", other_id, "--overlap", "0")
    run("rotate-secret", endpoint_id)
    monkeypatch.delenv("WEBHOOK_ENCRYPTION_KEYS")
    _, err = run("add", "--tenant", "t-1", "--url", URL, "--event", "*", code=EXIT_CONFIG)
    assert "WEBHOOK_ENCRYPTION_KEYS is not set" in err
    assert run.json("show", endpoint_id)["state"] == "enabled"  # reading needs no key


HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", "*", "order.*", "https://hooks.example/", "http://127.0.0.1/", "https://a@b/",
         "https://[::1", "nan", "-1", "1e400", "a\x00b", "x" * 5000, "[red]x", "ep_nope", "0"]
    ),
)  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_values_get_a_documented_exit_and_a_refusal_writes_nothing(
    db: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    command = data.draw(st.sampled_from(["add", "show", "disable", "enable", "rotate-secret"]))
    if command == "add":
        argv = ["add", "--tenant", data.draw(st.sampled_from(["t-1", "nobody"]) | HOSTILE)]
        argv += ["--url", data.draw(HOSTILE), "--event", data.draw(HOSTILE)]
        if data.draw(st.booleans()):
            argv += ["--rate-limit", data.draw(HOSTILE)]
    else:
        argv = [command, data.draw(HOSTILE), "--reason", data.draw(HOSTILE)]
    before = _count(db)
    capsys.readouterr()
    code = main([*ENDPOINTS, *argv])
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err, argv
    assert code in {0, 1, 2, 3}, (argv, printed.err)
    if code != 0:
        assert _count(db) == before, argv


def _count(db: Path) -> tuple[int, int]:
    with make_engine(f"sqlite:///{db}").connect() as conn:
        found = conn.execute(select(func.count()).select_from(webhook_endpoints_table)).scalar()
        audited = conn.execute(select(func.count()).select_from(audit_log_table)).scalar()
    return int(found or 0), int(audited or 0)
