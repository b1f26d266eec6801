"""The demo's local servers (pipeline/demo/receivers.py), spoken to over real sockets: the
webhook receiver answers its script and tells a good signature from a bad one; the
Twilio-style SMS API takes only its own path, login and a complete form."""

from __future__ import annotations

import base64
import os
import socket
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from jobs.sms import SmsRefused, TwilioStyleSms
from pipeline.demo.receivers import SmsApi, WebhookReceiver

pytestmark = pytest.mark.integration


def _secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _signed(secret: str, body: str) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_1", now, body),
        "content-type": "application/json",
    }


def test_the_receiver_answers_its_script_and_verifies_each_signature() -> None:
    body = '{"id":"ev-1","type":"order.placed"}'
    with WebhookReceiver({"/flaky": [500, 200]}) as hooks:
        hooks.secrets["/flaky"] = secret = _secret()
        statuses = [
            httpx.post(hooks.url("/flaky"), content=body, headers=_signed(s, body), timeout=5)
            for s in (_secret(), secret, secret)
        ]
        unknown = httpx.post(hooks.url("/nope"), content=body, timeout=5)
    assert [r.status_code for r in statuses] == [500, 200, 200]  # the last answer repeats
    assert hooks.received["/flaky"] == [(500, False), (200, True), (200, True)]
    assert unknown.status_code == 404


@pytest.mark.parametrize("length", ["x", "-5", str(64 * 1024 * 1024)])
def test_the_receiver_refuses_a_body_without_a_usable_length(length: str) -> None:
    with WebhookReceiver({"/ok": [200]}) as hooks:
        port = int(hooks.url("").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(
                f"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
            )
            answer = conn.recv(100)
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert hooks.received["/ok"] == []


def test_the_sms_api_takes_a_message_from_the_real_adapter_and_refuses_a_bad_login() -> None:
    with SmsApi() as sms:
        adapter = TwilioStyleSms(
            base_url=sms.url,
            account_sid=sms.account_sid,
            auth_token=SecretStr(sms.auth_token),
            from_number="+15005550006",
            timeout_s=5,
        )
        sid = adapter.send("+14155552671", "Globex Gadgets: your order o-1 was placed.")
        wrong = TwilioStyleSms(
            base_url=sms.url,
            account_sid=sms.account_sid,
            auth_token=SecretStr("not-the-token"),
            from_number="+15005550006",
            timeout_s=5,
        )
        with pytest.raises(SmsRefused, match="401"):
            wrong.send("+14155552671", "hello")
    assert sid.startswith("SM")
    assert sms.messages == [
        {
            "To": "+14155552671",
            "From": "+15005550006",
            "Body": "Globex Gadgets: your order o-1 was placed.",
        }
    ]
