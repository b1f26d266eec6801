"""outbound.signing: what we sign verifies with the official `standardwebhooks` package (v1)
and with an ed25519 public key (v1a); during a rotation both keys' signatures verify."""

from __future__ import annotations

import base64
import os
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from outbound.ports import SigningKey
from outbound.signing import headers, signature

OLD = os.urandom(32)
NEW = os.urandom(32)
SEED = os.urandom(32)


def _whsec(secret: bytes) -> str:
    return "whsec_" + base64.b64encode(secret).decode()


def _v1a_verifies(seed: bytes, header: str, webhook_id: str, ts: int, body: bytes) -> bool:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    for entry in header.split(" "):
        scheme, _, value = entry.partition(",")
        if scheme == "v1a":
            try:
                public.verify(base64.b64decode(value), f"{webhook_id}.{ts}.".encode() + body)
            except InvalidSignature:
                continue
            return True
    return False


@given(body=st.binary(max_size=2048))
def test_v1_verifies_with_the_official_package(body: bytes) -> None:
    now = int(time.time())
    sent = headers([SigningKey("v1", OLD)], "msg_abc", now, body, "outbox-pipeline-webhooks/1")
    assert Webhook(_whsec(OLD)).verify(body, sent, json_parse=False) is None
    with pytest.raises(WebhookVerificationError):
        Webhook(_whsec(NEW)).verify(body, sent, json_parse=False)


def test_the_headers_are_the_standard_ones() -> None:
    sent = headers([SigningKey("v1", OLD)], "msg_abc", 1700000000, b"{}", "ua/1")
    assert set(sent) == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "user-agent",
    }
    assert sent["webhook-timestamp"] == "1700000000"
    assert sent["content-type"] == "application/json" and sent["user-agent"] == "ua/1"


def test_v1a_verifies_with_the_ed25519_public_key() -> None:
    body = b'{"id": "evt_1", "type": "order.placed"}'
    header = signature([SigningKey("v1a", SEED)], "msg_1", 1700000000, body)
    assert header.startswith("v1a,") and " " not in header
    assert _v1a_verifies(SEED, header, "msg_1", 1700000000, body)
    assert not _v1a_verifies(SEED, header, "msg_1", 1700000001, body)
    assert not _v1a_verifies(os.urandom(32), header, "msg_1", 1700000000, body)


def test_during_a_rotation_both_secrets_verify() -> None:
    body = b'{"id": "evt_2"}'
    now = int(time.time())
    keys = [SigningKey("v1", NEW), SigningKey("v1", OLD), SigningKey("v1a", SEED)]
    sent = headers(keys, "msg_2", now, body, "ua/1")
    assert len(sent["webhook-signature"].split(" ")) == 3
    Webhook(_whsec(OLD)).verify(body, sent, json_parse=False)
    Webhook(_whsec(NEW)).verify(body, sent, json_parse=False)
    assert _v1a_verifies(SEED, sent["webhook-signature"], "msg_2", now, body)


@pytest.mark.parametrize(
    ("keys", "webhook_id", "ts", "message"),
    [
        ([], "msg_1", 1, "at least one key"),
        ([SigningKey("v2", OLD)], "msg_1", 1, "unknown signing scheme"),
        ([SigningKey("v1", b"")], "msg_1", 1, "no secret bytes"),
        ([SigningKey("v1a", b"short")], "msg_1", 1, "32-byte ed25519 seed"),
        ([SigningKey("v1", OLD)], "", 1, "webhook id"),
        ([SigningKey("v1", OLD)], "msg 1", 1, "webhook id"),
        ([SigningKey("v1", OLD)], "msg.1", 1, "webhook id"),
        ([SigningKey("v1", OLD)], "msg_1", -1, "timestamp"),
    ],
)
def test_bad_inputs_are_refused_without_showing_the_key(
    keys: list[SigningKey], webhook_id: str, ts: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        signature(keys, webhook_id, ts, b"{}")
    assert base64.b64encode(OLD).decode() not in str(caught.value)
    assert repr(OLD) not in str(caught.value)
