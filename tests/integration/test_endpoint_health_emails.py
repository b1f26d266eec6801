"""The e-mails of webhook endpoints paused or disabled (send-endpoint-health-email) on three
backends, with a real SMTP server: one e-mail to the tenant's contact per event, naming
the endpoint and the reason (from the endpoint's row), whatever the redeliveries; a record
naming an endpoint the database lacks, or another tenant, sends nothing. And the SMS
adapter against the local Twilio-style server: what it sends, and how each answer is
classified (retried or refused), never quoting the token or the number."""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, insert, select

from consumers.testing import JobRunner
from domain import CommandBus
from domain.schema import endpoint_notifications
from jobs.config import AppConfig
from jobs.mail import Mailer
from jobs.sms import SmsRefused, SmsUnavailable
from outbound.events import WebhookEndpointDisabled, WebhookEndpointPaused
from outbox.schema import inbox_table
from outbox.schema_webhooks import webhook_endpoints_table
from outbox.types import utcnow
from tests.campaign_harness import SmtpServer
from tests.scenario import onboard
from tests.sms_server import ACCOUNT_SID, AUTH_TOKEN, FROM, sms_server

pytestmark = pytest.mark.integration

JOB, TOPIC, EP = "send-endpoint-health-email", "webhook-events", "ep_0123456789abcdefghijklmnop"
CONTACT = "ops@acme.example"  # tests.scenario.onboard's
NUMBER = "+4915112345678"
SEALED = "sealed-by-the-endpoints-stream"  # what the row holds; never read here


def _endpoint(engine: Engine, *, reason: str | None = None) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(webhook_endpoints_table).values(
                id=EP,
                tenant_id="t-1",
                url="https://receiver.example/hook",
                event_types='["order.*"]',
                secret=SEALED,
                state="disabled" if reason else "paused",
                disabled_reason=reason,
                created_at=now,
                updated_at=now,
            )
        )


def _subjects(smtp: SmtpServer) -> list[str]:
    return [
        next(ln for ln in raw.decode().splitlines() if ln.startswith("Subject:"))
        for rcpts, raw in smtp.inbox.messages
        if CONTACT in rcpts
    ]


def test_a_paused_and_a_disabled_endpoint_each_send_one_email(
    engine: Engine, smtp: SmtpServer
) -> None:
    onboard(CommandBus(engine, shards=8))
    _endpoint(engine, reason="the receiver answered 410 Gone")
    config = AppConfig(mailer=Mailer(port=smtp.port, from_address="hooks@example.org"))
    until = utcnow() + timedelta(minutes=5)
    paused = WebhookEndpointPaused(tenant_id="t-1", endpoint_id=EP, failures=5, until=until)
    disabled = WebhookEndpointDisabled(tenant_id="t-1", endpoint_id=EP, reason="forged")
    events = [(str(uuid.uuid4()), paused), (str(uuid.uuid4()), disabled)]
    for round_ in range(3):
        runner = JobRunner(engine, config=config)
        for event_id, event in events:
            result = runner.run(JOB, event, key=EP, event_id=event_id, topic=TOPIC)
            assert result.outcome == ("duplicate" if round_ == 1 else "done")
        if round_ == 1:  # the inbox lost: the claims still know
            with engine.begin() as conn:
                conn.execute(delete(inbox_table))
    assert _subjects(smtp) == [
        f"Subject: Acme: webhook endpoint {EP} was paused",
        f"Subject: Acme: webhook endpoint {EP} was disabled",
    ]
    bodies = [raw.decode() for _, raw in smtp.inbox.messages]
    assert "5 failures in a row" in bodies[0]
    # The reason is the endpoint row's, not the record's.
    assert "the receiver answered 410 Gone" in bodies[1] and "forged" not in bodies[1]
    with engine.connect() as conn:
        states = conn.execute(select(endpoint_notifications.c.state)).scalars().all()
    assert sorted(states) == ["sent", "sent"]


def test_a_record_naming_an_unknown_endpoint_or_another_tenant_sends_nothing(
    engine: Engine, smtp: SmtpServer
) -> None:
    onboard(CommandBus(engine, shards=8))
    runner = JobRunner(engine, config=AppConfig(mailer=Mailer(port=smtp.port)))
    disabled = WebhookEndpointDisabled(tenant_id="t-1", endpoint_id=EP, reason="x")
    assert runner.run(JOB, disabled, key=EP, topic=TOPIC).reason == "not_verified"
    _endpoint(engine)
    other = WebhookEndpointDisabled(tenant_id="t-2", endpoint_id=EP, reason="x")
    assert runner.run(JOB, other, key=EP, topic=TOPIC).reason == "record_mismatch"
    assert not smtp.inbox.messages


def test_the_sms_adapter_speaks_the_messages_api() -> None:
    with sms_server() as server:
        sid = server.provider().send(NUMBER, "Acme: your order o-1 was paid.")
        assert sid.startswith("SM") and server.sent == [
            {"To": NUMBER, "From": FROM, "Body": "Acme: your order o-1 was paid."}
        ]
        # A wrong token is refused (401) for good, and the token is never quoted.
        with pytest.raises(SmsRefused) as refused:
            server.provider(token="wrong-token-quoted-nowhere").send(NUMBER, "x")  # noqa: S106
        assert "401" in str(refused.value) and "wrong-token" not in str(refused.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, SmsRefused),
        (404, SmsRefused),
        (429, SmsUnavailable),
        (500, SmsUnavailable),
        (503, SmsUnavailable),
    ],
)
def test_each_answer_is_retried_or_refused_without_quoting_secrets(
    status: int, error: type[Exception]
) -> None:
    with sms_server(lambda _n: status) as server, pytest.raises(error) as raised:
        server.provider().send(NUMBER, "hello")
    text = str(raised.value)
    assert str(status) in text and "+***78" in text
    for secret in (AUTH_TOKEN, NUMBER, NUMBER[1:], ACCOUNT_SID):
        assert secret not in text


def test_a_dead_or_silent_api_is_retried_within_the_timeout() -> None:
    with sms_server() as server:
        provider = server.provider(timeout_s=0.5)
    # The server is gone: connection refused, retried (SmsUnavailable).
    with pytest.raises(SmsUnavailable, match="ConnectError"):
        provider.send(NUMBER, "hello")
    # A server that takes the connection and never answers: the read timeout ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        mute = replace(provider, base_url=f"http://127.0.0.1:{port}")
        with pytest.raises(SmsUnavailable, match="ReadTimeout") as raised:
            mute.send(NUMBER, "hello")
    assert NUMBER not in str(raised.value) and AUTH_TOKEN not in str(raised.value)
