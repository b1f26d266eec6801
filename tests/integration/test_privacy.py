"""Personal data on SQLite, PostgreSQL and MariaDB: `outbox prune` empties the raw body and
headers of payment webhooks past PAYMENT_WEBHOOK_RETENTION_S (recent ones and the ledger
stay, and a pruned webhook still processes), and `outbox privacy erase` leaves no trace of
one address in any table, audited without it; bad input exits 2 and changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, select, update

from consumers import store
from consumers.messages import ScheduledJobDue
from consumers.testing import JobRunner, run_job
from domain import CommandBus, registry
from domain.payments import (
    AcceptPaymentWebhook,
    PaymentNotice,
    PaymentWebhookReceived,
    accept_webhook,
)
from domain.replay import rebuild_projections
from domain.schema import domain_events, orders, payment_ledger, payment_webhooks
from jobs.config import AppConfig
from outbox.audit import entries
from outbox.types import utcnow
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK, EXIT_USAGE
from tests.scenario import run_full_scenario

pytestmark = pytest.mark.integration

ANN = "ann@example.com"
TOTAL = 2 * 1250 + 999  # the scenario's order o-1


@pytest.fixture
def bus(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> CommandBus:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    return CommandBus(engine, shards=8)


def _accept(bus: CommandBus, webhook_id: str, *, kind: str = "other") -> None:
    notice = PaymentNotice(
        gateway="standard",
        webhook_id=webhook_id,
        kind=kind,  # type: ignore[arg-type]
        gateway_type="payment.note" if kind == "other" else f"payment.{kind}",
        payment_id="pay-9",
        order_id="o-1",
        amount_cents=TOTAL,
        sent_at=datetime.now(UTC),
    )
    body = json.dumps({"customer": {"email": ANN, "name": "Ann Smith"}, "card": {"last4": "4242"}})
    headers = {"webhook-id": webhook_id, "webhook-signature": "v1,c2lnbmF0dXJl"}
    cmd = AcceptPaymentWebhook(
        notice=notice, scheme="standard-webhooks", body=body, headers=headers
    )
    assert not accept_webhook(bus, cmd).duplicate


def _webhooks(engine: Engine) -> dict[str, Any]:
    w = payment_webhooks
    with engine.connect() as conn:
        rows = conn.execute(select(w).order_by(w.c.webhook_id)).all()
    return {r.webhook_id: r for r in rows}


def _ledger(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(payment_ledger).order_by("kind"))]


def _received(engine: Engine, webhook_id: str) -> PaymentWebhookReceived:
    """The event accepted with a webhook, as the relay would carry it."""
    row = _webhooks(engine)[webhook_id]
    with engine.connect() as conn:
        payload = conn.execute(
            select(domain_events.c.payload).where(domain_events.c.aggregate_id == row.id)
        ).scalar_one()
    return PaymentWebhookReceived.model_validate(json.loads(payload))


def test_prune_empties_old_webhook_bodies_and_keeps_recent_ones_and_the_ledger(
    bus: CommandBus, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = bus.engine
    run_full_scenario(bus)
    _accept(bus, "wh-old")
    _accept(bus, "wh-old-payment", kind="succeeded")
    _accept(bus, "wh-new")
    w = payment_webhooks
    with engine.begin() as conn:
        conn.execute(
            update(w)
            .where(w.c.webhook_id.in_(["wh-old", "wh-old-payment"]))
            .values(received_at=utcnow() - timedelta(days=31))
        )
    ledger = _ledger(engine)
    assert ledger
    before = _webhooks(engine)
    capsys.readouterr()

    assert main(["prune", "--dry-run", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["webhook_bodies"] == 2
    assert main(["prune", "--yes", "--json"]) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert done["webhook_bodies"] == 2
    # The keys `outbox prune --json` always had are still there.
    assert {"outbox_rows", "inbox_rows", "batch_rows", "cutoff", "archive"} <= set(done)

    after = _webhooks(engine)
    for old in ("wh-old", "wh-old-payment"):
        assert after[old].body == "" and after[old].headers == ""
        assert (after[old].id, after[old].kind, after[old].order_id, after[old].tenant_id) == (
            before[old].id,
            before[old].kind,
            before[old].order_id,
            before[old].tenant_id,
        )
    assert after["wh-new"].body == before["wh-new"].body and ANN in after["wh-new"].body
    assert after["wh-new"].headers == before["wh-new"].headers
    assert _ledger(engine) == ledger
    # Again: nothing left to empty.
    assert main(["prune", "--yes", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["webhook_bodies"] == 0

    # A pruned webhook still processes: the job verifies the accepted event, not the body.
    result = run_job(engine, "process-payment-webhook", _received(engine, "wh-old"))
    assert result.outcome == "done"
    assert _webhooks(engine)["wh-old"].outcome == "ignored"


def test_the_scheduled_prune_empties_old_webhook_bodies_too(bus: CommandBus) -> None:
    engine = bus.engine
    run_full_scenario(bus)
    _accept(bus, "wh-old")
    _accept(bus, "wh-new")
    w = payment_webhooks
    with engine.begin() as conn:
        conn.execute(
            update(w)
            .where(w.c.webhook_id == "wh-old")
            .values(received_at=utcnow() - timedelta(days=2))
        )
    runner = JobRunner(engine, config=AppConfig(payment_webhook_retention_s=86400))
    due = ScheduledJobDue(job="prune-outbox", slot=utcnow())
    assert runner.dispatch("prune-outbox", due)
    assert [(r.job, r.outcome) for r in runner.drain("maintenance")] == [("prune-outbox", "done")]
    after = _webhooks(engine)
    assert after["wh-old"].body == "" and ANN in after["wh-new"].body
    with engine.connect() as conn:
        (audit,) = entries(conn, action="prune")
    assert json.loads(audit.details)["webhook_bodies"] == 1


def _failed_job(engine: Engine, text: str) -> None:
    with engine.begin() as conn:
        store.insert_failed(
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
                "payload": json.dumps({"to": text}),
                "payload_encoding": "utf-8",
                "headers": "{}",
                "reason": "exception",
                "exception_class": "SMTPRecipientsRefused",
                "exception_message": f"{text} refused",
                "traceback": f"SMTPRecipientsRefused: {text}",
                "attempts": 3,
                "failed_at": utcnow(),
            },
        )


def _found(engine: Engine, needle: str) -> list[str]:
    """Every `table.column` of the database (whatever its definition) holding `needle`."""
    found = []
    schema = MetaData()
    schema.reflect(engine)
    with engine.connect() as conn:
        for table in schema.sorted_tables:
            for row in conn.execute(select(table)):
                for name, value in row._mapping.items():
                    if needle in str(value).lower():
                        found.append(f"{table.name}.{name}")
    return sorted(set(found))


def test_erase_leaves_no_trace_of_the_address_in_any_table(
    bus: CommandBus, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = bus.engine
    run_full_scenario(bus)
    _accept(bus, "wh-1")
    _failed_job(engine, "Ann@Example.com")
    assert {"orders.customer_email", "domain_events.payload", "campaign_recipients.email"} <= set(
        _found(engine, ANN)
    )
    capsys.readouterr()

    argv = ["privacy", "erase", "--email", "ANN@example.com", "--yes", "--json"]
    assert main([*argv, "--reason", f"request 42 from {ANN}"]) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert _found(engine, ANN) == []
    assert _found(engine, "bob@example.com")  # nobody else's data was touched
    for table in ("orders", "domain_events", "campaign_recipients", "payment_webhooks"):
        assert done["tables"][table] >= 1, done
    assert done["tables"]["failed_jobs"] == 1
    pseudonym = f"erased-{done['reference']}@erased.example"
    with engine.connect() as conn:
        emails = conn.execute(select(orders.c.customer_email).order_by(orders.c.id)).scalars()
        assert list(emails) == [pseudonym, "bob@example.com"]
        audit = entries(conn, action="privacy_erase")
    assert [e.target for e in audit] == [f"erasure:{done['reference']}"]
    assert webhook_emptied(engine, "wh-1")
    # The event store says what the projections say: a rebuild brings the address back nowhere.
    with engine.begin() as conn:
        rebuild_projections(conn, registry)
    assert _found(engine, ANN) == []
    # Erasing again finds nothing.
    assert main([*argv, "--reason", "again"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["rows"] == 0


def webhook_emptied(engine: Engine, webhook_id: str) -> bool:
    row = _webhooks(engine)[webhook_id]
    return row.body == "" and row.headers == "" and row.order_id == "o-1"


@pytest.mark.parametrize(
    "argv",
    [
        ["--email", "not-an-address", "--reason", "r", "--yes"],
        ["--email", "ann@", "--reason", "r", "--yes"],
        ["--email", "", "--reason", "r", "--yes"],
        ["--email", ANN, "--yes"],  # no reason
        ["--email", ANN, "--reason", "   ", "--yes"],
        ["--reason", "r", "--yes"],  # no address
        ["--email", ANN, "--reason", "r", "--batch-size", "0", "--yes"],
        ["--email", ANN, "--reason", "r"],  # no --yes, and no terminal to confirm on
    ],
)
def test_bad_input_exits_2_and_changes_nothing(bus: CommandBus, argv: list[str]) -> None:
    run_full_scenario(bus)
    engine = bus.engine
    before = _found(engine, ANN)
    assert main(["privacy", "erase", *argv]) == EXIT_USAGE
    assert _found(engine, ANN) == before
    with engine.connect() as conn:
        assert not entries(conn, action="privacy_erase")
