"""Standard Webhooks signatures of an outbound delivery (ADR 021 decision 8).

Every key signs ``{webhook_id}.{timestamp}.{body}``:

    v1    base64 of HMAC-SHA256 under the raw secret bytes (``whsec_`` + base64 of them)
    v1a   base64 of an ed25519 signature with the private key's 32-byte seed

During a rotation the endpoint has two keys and the header carries both signatures,
space-separated, so a receiver that knows either secret verifies. The signature and the
key material are never logged: callers log the webhook id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outbound.ports import SigningKey

__all__ = ["SCHEMES", "headers", "signature", "signed_content"]

SCHEMES = ("v1", "v1a")
_ED25519_SEED_BYTES = 32
# A webhook id is ours ("msg_" + hex, ADR 021 decision 3); these characters would make the
# signed content or the header ambiguous.
_ID_FORBIDDEN = frozenset(" .,\t\r\n")


def signed_content(webhook_id: str, timestamp: int, body: bytes) -> bytes:
    """What every scheme signs: ``{id}.{timestamp}.{body}``, checked first."""
    if not webhook_id or _ID_FORBIDDEN & set(webhook_id) or not webhook_id.isascii():
        raise ValueError("a webhook id is non-empty ASCII without spaces, dots or commas")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("a webhook timestamp is a non-negative integer (Unix seconds)")
    return f"{webhook_id}.{timestamp}.".encode() + body


def _sign(key: SigningKey, content: bytes) -> str:
    if key.scheme == "v1":
        if not key.material:
            raise ValueError("a v1 signing key has no secret bytes")
        digest = hmac.new(key.material, content, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()
    if key.scheme == "v1a":
        if len(key.material) != _ED25519_SEED_BYTES:
            raise ValueError(f"a v1a signing key is a {_ED25519_SEED_BYTES}-byte ed25519 seed")
        private = Ed25519PrivateKey.from_private_bytes(key.material)
        return "v1a," + base64.b64encode(private.sign(content)).decode()
    # The scheme's name is ours, not a secret: safe to say.
    raise ValueError(f"unknown signing scheme {key.scheme[:16]!r}; one of {', '.join(SCHEMES)}")


def signature(keys: Sequence[SigningKey], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``scheme,base64`` per key, space-separated."""
    if not keys:
        raise ValueError("an endpoint signs with at least one key")
    content = signed_content(webhook_id, timestamp, body)
    return " ".join(_sign(key, content) for key in keys)


def headers(
    keys: Sequence[SigningKey], webhook_id: str, timestamp: int, body: bytes, user_agent: str
) -> dict[str, str]:
    """Every header of one delivery's POST (the same webhook id on every retry)."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(keys, webhook_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": user_agent,
    }
