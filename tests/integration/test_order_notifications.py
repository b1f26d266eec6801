"""Order-status notifications end to end on SQLite, PostgreSQL and MariaDB: the real
send-order-notification job run by consumers.testing (the attempt path, no broker) on the
events the commands wrote, with a real SMTP server (aiosmtpd) and a real local server
speaking the Twilio-style Messages API (tests/sms_server.py). One e-mail and one SMS per
(order, status) whatever the redeliveries; a 400 fails the job with its reason and the
e-mail still goes once; a 500 is retried; the token and the full number never reach the
logs, the failed jobs or the notifications' rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update
from structlog.testing import capture_logs

from consumers import group_named
from consumers.failed_jobs import FailedFilter, retry
from consumers.testing import JobResult, JobRunner
from domain import CommandBus, registry
from domain.ordering import CancelOrder, OrderLine, OrderPaid, PayOrder, PlaceOrder
from domain.privacy import erase_address, erased_phone
from domain.replay import rebuild_projections
from domain.schema import domain_events, order_notifications, orders, tenants
from domain.tenancy import SetTenantNotificationChannels
from jobs.config import AppConfig
from jobs.mail import Mailer
from outbox.schema import failed_jobs_table, inbox_table
from outbox.types import utcnow
from tests.campaign_harness import SmtpServer
from tests.scenario import onboard, product
from tests.sms_server import AUTH_TOKEN, SmsServer, sms_server

pytestmark = pytest.mark.integration

ANN, ANN_PHONE = "ann@example.com", "+4915112345678"
BOB, BOB_PHONE = "bob@example.com", "+14155552671"
GROUP = "notifications"


@pytest.fixture
def sms() -> Iterator[SmsServer]:
    with sms_server() as server:
        yield server


def _config(smtp: SmtpServer, sms: SmsServer | None) -> AppConfig:
    mailer = Mailer(port=smtp.port, from_address="shop@example.org", timeout_s=5)
    return AppConfig(mailer=mailer, sms=sms.provider() if sms else None)


def _shop(bus: CommandBus, channels: str = "email,sms") -> None:
    onboard(bus)
    bus.dispatch(SetTenantNotificationChannels(tenant_id="t-1", channels=channels))
    product(bus, "p-1", stock=10)


def _place(bus: CommandBus, order_id: str, email: str, phone: str | None) -> None:
    lines = [OrderLine(product_id="p-1", quantity=1)]
    bus.dispatch(
        PlaceOrder(
            order_id=order_id,
            tenant_id="t-1",
            customer_email=email,
            customer_phone=phone,
            lines=lines,
        )
    )


def _rows(engine: Engine) -> dict[tuple[str, str, str], Any]:
    n = order_notifications
    with engine.connect() as conn:
        return {(r.order_id, r.status, r.channel): r for r in conn.execute(select(n)).all()}


def _failed(engine: Engine) -> list[Any]:
    f = failed_jobs_table
    with engine.connect() as conn:
        return list(conn.execute(select(f).where(f.c.group_name == GROUP)).all())


def _emails(smtp: SmtpServer, address: str) -> list[str]:
    found = []
    for rcpts, raw in smtp.inbox.messages:
        if address in rcpts:
            subject = next(ln for ln in raw.decode().splitlines() if ln.startswith("Subject:"))
            found.append(subject)
    return found


def _outcomes(results: list[JobResult]) -> list[str]:
    return [r.outcome for r in results]


def _assert_no_secrets(engine: Engine, logs: list[dict[str, Any]]) -> None:
    """Neither the token nor a full number in the logs, failed jobs or notifications."""
    # failed_jobs.payload holds the record (the event, number included, as it holds the
    # address: docs/privacy.md); its error and traceback must not.
    stored = [f"{r.exception_message} {r.traceback}" for r in _failed(engine)] + [
        str(tuple(r)) for r in _rows(engine).values()
    ]
    for text in (json.dumps(logs, default=str), *stored):
        for secret in (AUTH_TOKEN, ANN_PHONE, BOB_PHONE, ANN_PHONE[1:], BOB_PHONE[1:]):
            assert secret not in text


def test_each_status_sends_one_email_and_one_sms_whatever_the_redeliveries(
    engine: Engine, smtp: SmtpServer, sms: SmsServer
) -> None:
    bus = CommandBus(engine, shards=8)
    _shop(bus)
    _place(bus, "o-1", ANN, ANN_PHONE)
    bus.dispatch(PayOrder(order_id="o-1", payment_ref="pay-1", amount_cents=1250))
    _place(bus, "o-2", BOB, BOB_PHONE)
    bus.dispatch(CancelOrder(order_id="o-2", reason="out of stock"))
    config = _config(smtp, sms)
    with capture_logs() as logs:
        first = JobRunner(engine, config=config).drain(GROUP)
        assert _outcomes(first) == ["done"] * 4
        # The relay delivers everything again (the inbox says "seen") ...
        again = JobRunner(engine, config=config).drain(GROUP)
        assert _outcomes(again) == ["duplicate"] * 4
        # ... and again with the inbox lost (a crash before its rows committed): the
        # claims find every message sent.
        with engine.begin() as conn:
            conn.execute(delete(inbox_table))
        third = JobRunner(engine, config=config).drain(GROUP)
        assert _outcomes(third) == ["done"] * 4
    assert _emails(smtp, ANN) == ["Subject: Acme: your order o-1 was placed",
                                  "Subject: Acme: your order o-1 was paid"]  # fmt: skip
    assert _emails(smtp, BOB) == ["Subject: Acme: your order o-2 was placed",
                                  "Subject: Acme: your order o-2 was cancelled"]  # fmt: skip
    assert sms.to(ANN_PHONE) == [
        "Acme: your order o-1 was placed.",
        "Acme: your order o-1 was paid.",
    ]
    assert sms.to(BOB_PHONE) == [
        "Acme: your order o-2 was placed.",
        "Acme: your order o-2 was cancelled.",
    ]
    rows = _rows(engine)
    assert len(rows) == 8 and {r.state for r in rows.values()} == {"sent"}
    assert all(r.attempts == 1 and r.sent_at is not None for r in rows.values())
    assert rows["o-1", "paid", "sms"].provider_message_id.startswith("SM")
    assert rows["o-1", "paid", "email"].provider_message_id is None
    assert not _failed(engine)
    sent = [line for line in logs if line.get("event") == "order_notification_sent"]
    assert {line["to"] for line in sent} == {
        "a***@example.com",
        "b***@example.com",
        "+***78",
        "+***71",
    }
    _assert_no_secrets(engine, logs)


def test_an_sms_refused_with_400_fails_the_job_and_the_email_goes_once(
    engine: Engine, smtp: SmtpServer
) -> None:
    bus = CommandBus(engine, shards=8)
    _shop(bus)
    _place(bus, "o-1", ANN, ANN_PHONE)
    with sms_server(lambda _n: 400) as sms, capture_logs() as logs:
        config = _config(smtp, sms)
        results = JobRunner(engine, config=config).drain(GROUP)
        assert [(r.outcome, r.reason) for r in results] == [("failed", "notification_refused")]
        with engine.begin() as conn:
            conn.execute(delete(inbox_table))
        again = JobRunner(engine, config=config).drain(GROUP)
        assert [(r.outcome, r.reason) for r in again] == [("failed", "notification_refused")]
        assert sms.requests == 1 and not sms.sent  # refused for good: not asked again
    assert len(_emails(smtp, ANN)) == 1
    rows = _rows(engine)
    assert rows["o-1", "placed", "email"].state == "sent"
    refused = rows["o-1", "placed", "sms"]
    assert refused.state == "refused" and "refused the message with 400" in refused.last_error
    assert "+***78" in refused.last_error
    failed = _failed(engine)
    assert len(failed) == 2 and "sms" in failed[0].exception_message
    _assert_no_secrets(engine, logs)


def test_a_crash_between_sending_and_recording_is_sent_again_only_by_an_operator(
    engine: Engine, smtp: SmtpServer, sms: SmsServer
) -> None:
    """Given the SMS claimed by an attempt that died before recording its outcome (the row
    left `sending`), the job sends the e-mail, not that SMS, and fails for an operator;
    `outbox failed retry` sends it once more."""
    bus = CommandBus(engine, shards=8)
    _shop(bus)
    _place(bus, "o-1", ANN, ANN_PHONE)
    with engine.begin() as conn:
        conn.execute(
            insert(order_notifications).values(
                order_id="o-1", status="placed", channel="sms", tenant_id="t-1",
                state="sending", attempts=1, claimed_at=utcnow(),
            )
        )  # fmt: skip
    runner = JobRunner(engine, config=_config(smtp, sms))
    [result] = runner.drain(GROUP)
    assert (result.outcome, result.reason) == ("failed", "notification_refused")
    assert "outcome never recorded" in (result.error or "")
    assert len(_emails(smtp, ANN)) == 1 and not sms.sent
    with engine.begin() as conn:
        retried = retry(conn, FailedFilter(group=GROUP), {GROUP: group_named(GROUP)}, shards=8)
    assert len(retried) == 1
    assert _outcomes(runner.drain(GROUP)) == ["done"]
    assert sms.to(ANN_PHONE) == ["Acme: your order o-1 was placed."]
    assert len(_emails(smtp, ANN)) == 1  # sent before: not again
    row = _rows(engine)["o-1", "placed", "sms"]
    assert (row.state, row.attempts) == ("sent", 2)
    assert not _failed(engine)


def test_an_sms_answered_500_is_retried_and_sent_once(engine: Engine, smtp: SmtpServer) -> None:
    bus = CommandBus(engine, shards=8)
    _shop(bus)
    _place(bus, "o-1", ANN, ANN_PHONE)
    with sms_server(lambda n: 500 if n < 2 else 201) as sms, capture_logs() as logs:
        results = JobRunner(engine, config=_config(smtp, sms)).drain(GROUP)
        assert [(r.outcome, r.attempt) for r in results] == [
            ("retry", 1),
            ("retry", 2),
            ("done", 3),
        ]
        assert sms.requests == 3 and sms.to(ANN_PHONE) == ["Acme: your order o-1 was placed."]
    assert len(_emails(smtp, ANN)) == 1  # the retries found it sent
    rows = _rows(engine)
    assert (
        rows["o-1", "placed", "sms"].attempts == 3 and rows["o-1", "placed", "sms"].state == "sent"
    )
    assert rows["o-1", "placed", "email"].attempts == 1
    assert not _failed(engine)
    _assert_no_secrets(engine, logs)


def test_channels_phones_and_providers_choose_what_is_sent(
    engine: Engine, smtp: SmtpServer, sms: SmsServer
) -> None:
    bus = CommandBus(engine, shards=8)
    _shop(bus, channels="sms")
    _place(bus, "o-1", ANN, ANN_PHONE)
    _place(bus, "o-2", BOB, None)  # sms only, but no phone: nothing to send
    with capture_logs() as logs:
        results = JobRunner(engine, config=_config(smtp, sms)).drain(GROUP)
    assert _outcomes(results) == ["done", "done"]
    assert not smtp.inbox.messages and sms.to(ANN_PHONE) and not sms.to(BOB_PHONE)
    skipped = [line for line in logs if line.get("event") == "order_notification_skipped"]
    assert [(s["order_id"], s["reason"]) for s in skipped] == [("o-2", "no_phone")]
    # Without an SMS provider (SMS_PROVIDER=none), e-mail tenants still get their e-mails.
    bus.dispatch(SetTenantNotificationChannels(tenant_id="t-1", channels="email,sms"))
    bus.dispatch(CancelOrder(order_id="o-1"))
    results = JobRunner(engine, config=_config(smtp, None)).drain(GROUP)
    assert [r.outcome for r in results if r.outcome != "duplicate"] == ["done"]
    assert _emails(smtp, ANN) == ["Subject: Acme: your order o-1 was cancelled"]
    assert len(sms.sent) == 1


def test_a_record_the_event_store_does_not_hold_sends_nothing(
    engine: Engine, smtp: SmtpServer, sms: SmsServer
) -> None:
    bus = CommandBus(engine, shards=8)
    _shop(bus)
    _place(bus, "o-1", ANN, ANN_PHONE)
    runner = JobRunner(engine, config=_config(smtp, sms))
    paid = OrderPaid(payment_ref="forged", amount_cents=1250)
    forged = runner.run("send-order-notification", paid, key="o-1", topic="order-events")
    assert (forged.outcome, forged.reason) == ("failed", "not_verified")
    with engine.connect() as conn:
        placed_id = conn.execute(
            select(domain_events.c.event_id).where(domain_events.c.type == "order.placed")
        ).scalar_one()
    other = runner.run(
        "send-order-notification", paid, key="o-1", event_id=placed_id, topic="order-events"
    )
    assert (other.outcome, other.reason) == ("failed", "record_mismatch")
    assert not smtp.inbox.messages and not sms.sent and not _rows(engine)


def test_old_events_send_nothing(engine: Engine, smtp: SmtpServer, sms: SmsServer) -> None:
    bus = CommandBus(engine, shards=8)
    _shop(bus)
    _place(bus, "o-1", ANN, ANN_PHONE)
    config = AppConfig(mailer=Mailer(port=smtp.port), sms=sms.provider(), notification_max_age_s=60)
    with engine.begin() as conn:
        conn.execute(
            update(domain_events)
            .where(domain_events.c.type == "order.placed")
            .values(occurred_at=utcnow() - timedelta(days=2))
        )
    assert _outcomes(JobRunner(engine, config=config).drain(GROUP)) == ["done"]
    assert not smtp.inbox.messages and not sms.sent and not _rows(engine)


def test_phone_and_channels_survive_a_rebuild_and_the_phone_is_erased(engine: Engine) -> None:
    bus = CommandBus(engine, shards=8)
    _shop(bus)
    _place(bus, "o-1", ANN, ANN_PHONE)
    with engine.begin() as conn:
        rebuild_projections(conn, registry)
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.customer_phone)).scalar_one() == ANN_PHONE
        assert conn.execute(select(tenants.c.notification_channels)).scalar_one() == "email,sms"
    result = erase_address(engine, ANN, "0123456789abcdef")
    assert result.tables["orders"] == 1
    with engine.begin() as conn:
        rebuild_projections(conn, registry)
    with engine.connect() as conn:
        phone = conn.execute(select(orders.c.customer_phone)).scalar_one()
        payloads = " ".join(conn.execute(select(domain_events.c.payload)).scalars())
    assert phone == erased_phone("0123456789abcdef")
    assert ANN_PHONE not in payloads and ANN not in payloads
