"""Endpoint signing secrets (outbound.secrets): the Standard Webhooks forms, the AES-GCM box
and its key ring, and the settings that build it; no message ever shows key material."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from outbound.secrets import (
    BadSecretToken,
    SecretBox,
    SecretError,
    UnknownKey,
    generate,
    public_key,
    signing_key,
)
from pipeline.settings import SettingsError, load_settings
from pipeline.settings_webhooks import secret_box

MSG_ID, BODY = "msg_2b8f", b'{"id":"e-1","type":"order.paid"}'
WHEN = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def _material() -> bytes:
    return os.urandom(32)


def _entry(kid: str, material: bytes) -> str:
    return f"{kid}:{base64.b64encode(material).decode()}"


def test_a_v1_secret_is_whsec_base64_of_32_bytes_and_shown_as_stored() -> None:
    stored, shown = generate("v1")
    assert stored == shown and stored.startswith("whsec_")
    assert len(base64.b64decode(stored.removeprefix("whsec_"), validate=True)) == 32
    assert generate("v1")[0] != stored


def test_a_v1_signature_made_with_the_signing_key_verifies_with_standardwebhooks() -> None:
    secret, _ = generate("v1")
    key = signing_key(secret)
    assert key.scheme == "v1"
    timestamp = str(int(WHEN.timestamp()))
    mac = hmac.new(key.material, f"{MSG_ID}.{timestamp}.".encode() + BODY, hashlib.sha256)
    signature = "v1," + base64.b64encode(mac.digest()).decode()
    hook = Webhook(secret)
    assert hook.sign(MSG_ID, WHEN, BODY) == signature
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": timestamp, "webhook-signature": signature}
    with pytest.raises(Exception, match="timestamp"):  # only the age is wrong: the MAC passed
        hook.verify(BODY, headers)
    other = Webhook(generate("v1")[0])
    assert other.sign(MSG_ID, WHEN, BODY) != signature


def test_a_v1a_secret_is_an_ed25519_seed_and_the_user_sees_its_public_key() -> None:
    stored, shown = generate("v1a")
    assert stored.startswith("whsk_") and shown.startswith("whpk_")
    key = signing_key(stored)
    assert key.scheme == "v1a" and len(key.material) == 32
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(shown.removeprefix("whpk_")))
    message = f"{MSG_ID}.1733551200.".encode() + BODY
    public.verify(Ed25519PrivateKey.from_private_bytes(key.material).sign(message), message)
    assert public_key(stored) == shown
    assert public_key(generate("v1")[0]).startswith("whsec_")


@pytest.mark.parametrize(
    "stored", ["", "whsec_", "whsec_not*base64", "whsk_" + "A" * 8, "sk_live_x", "whpk_AAAA"]
)
def test_a_malformed_stored_secret_is_refused(stored: str) -> None:
    with pytest.raises(SecretError, match="malformed"):
        signing_key(stored)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(SecretError, match="v1, v1a"):
        generate("v2")


@given(plain=st.text(max_size=300), aad=st.text(min_size=1, max_size=60))
def test_the_box_round_trips_any_text_bound_to_its_endpoint(plain: str, aad: str) -> None:
    box = SecretBox([("k1", b"\x07" * 32)])
    token = box.encrypt(plain, aad=aad)
    assert token.startswith("gcm1:k1:")
    assert box.decrypt(token, aad=aad) == plain
    with pytest.raises(BadSecretToken):
        box.decrypt(token, aad=aad + "x")


def test_two_encryptions_of_one_secret_differ_and_neither_shows_it() -> None:
    box = SecretBox([("k1", _material())])
    secret, _ = generate("v1")
    first, second = box.encrypt(secret, aad="ep_a"), box.encrypt(secret, aad="ep_a")
    assert first != second
    raw = secret.removeprefix("whsec_")
    assert raw not in first and raw not in second


def test_a_tampered_token_fails_naming_the_key_id_only() -> None:
    material = _material()
    box = SecretBox([("k1", material)])
    token = box.encrypt("whsec_c2VjcmV0", aad="ep_a")
    head, body = token.rsplit(":", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad in (f"{head}:{flipped}", f"{head}:{body[:10]}", f"{head}:"):
        with pytest.raises(BadSecretToken, match="'k1'") as caught:
            box.decrypt(bad, aad="ep_a")
        assert base64.b64encode(material).decode() not in str(caught.value)
    for junk in ("", "whsec_x", "gcm1:k 1:abc", "gcm2:k1:abc"):
        with pytest.raises(BadSecretToken, match="not an encrypted token"):
            box.decrypt(junk, aad="ep_a")


def test_the_master_ring_rotates_newest_encrypts_every_key_decrypts() -> None:
    old, new = _material(), _material()
    before = SecretBox([("k1", old)])
    token = before.encrypt("whsec_b2xk", aad="ep_a")
    after = SecretBox.parse([_entry("k2", new), _entry("k1", old)])
    assert after.newest == "k2" and after.kids == ("k2", "k1")
    assert after.decrypt(token, aad="ep_a") == "whsec_b2xk"
    fresh = after.encrypt("whsec_bmV3", aad="ep_a")
    assert after.kid_of(fresh) == "k2"
    retired = SecretBox([("k2", new)])
    assert retired.decrypt(fresh, aad="ep_a") == "whsec_bmV3"
    with pytest.raises(UnknownKey, match=r"'k1'.*WEBHOOK_ENCRYPTION_KEYS") as caught:
        retired.decrypt(token, aad="ep_a")
    assert base64.b64encode(old).decode() not in str(caught.value)


def test_a_key_under_a_reused_id_does_not_decrypt_the_old_tokens() -> None:
    token = SecretBox([("k1", _material())]).encrypt("whsec_eA==", aad="ep_a")
    with pytest.raises(BadSecretToken, match="now names another key"):
        SecretBox([("k1", _material())]).decrypt(token, aad="ep_a")


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ([], "at least one"),
        (["k1"], "entry 1 is not kid:base64"),
        (["k1:" + base64.b64encode(b"x" * 32).decode(), "bad kid!:AAAA"], "entry 2"),
        (["k1:%%%notbase64%%%"], "'k1' is not base64"),
        (["k1:" + base64.b64encode(b"short-key-material").decode()], "'k1' is not 32 bytes"),
        (["k1:" + base64.b64encode(b"y" * 32).decode()] * 2, "'k1' is given twice"),
    ],
)
def test_a_malformed_ring_is_refused_without_its_material(entries: list[str], says: str) -> None:
    with pytest.raises(SecretError, match=says) as caught:
        SecretBox.parse(entries)
    for entry in entries:
        material = entry.partition(":")[2]
        if material:
            assert material not in str(caught.value)


def test_the_setting_builds_the_box_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    material = base64.b64encode(_material()).decode()
    monkeypatch.setenv("WEBHOOK_ENCRYPTION_KEYS", f" k2:{material} , k1:{material[::-1]}")
    with pytest.raises(SettingsError) as caught:  # the reversed one is not valid base64 of 32
        load_settings()
    assert "WEBHOOK_ENCRYPTION_KEYS" in str(caught.value)
    assert material not in str(caught.value) and material[::-1] not in str(caught.value)
    other = base64.b64encode(_material()).decode()
    monkeypatch.setenv("WEBHOOK_ENCRYPTION_KEYS", f"k2:{material},k1:{other}")
    loaded = load_settings()
    assert secret_box(loaded).kids == ("k2", "k1")
    assert loaded.public_view()["WEBHOOK_ENCRYPTION_KEYS"] == "********"
    assert f"k2:{material}" in loaded.secret_values()


def test_no_key_is_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WEBHOOK_ENCRYPTION_KEYS", raising=False)
    with pytest.raises(SettingsError, match="WEBHOOK_ENCRYPTION_KEYS is not set"):
        secret_box(load_settings())
