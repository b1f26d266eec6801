"""Endpoint signing secrets (ADR 021 decision 8): made here, shown once, stored encrypted.

- ``generate(scheme)``: a new secret. ``v1``: ``whsec_`` + base64 of 32 random bytes, the
  Standard Webhooks form (``standardwebhooks.Webhook(secret)`` verifies with it); the user
  is shown the same text. ``v1a``: an ed25519 key, stored as ``whsk_`` + base64 of its
  32-byte seed; the user is shown its public key, ``whpk_`` + base64 of 32 raw bytes.
- ``SecretBox``: AES-GCM under a ring of master keys (WEBHOOK_ENCRYPTION_KEYS, ``kid:base64``,
  newest first): the newest encrypts, every key decrypts, so the ring can be rotated. The
  endpoint id is the associated data, so a secret copied to another endpoint's row fails.
- ``signing_key(stored)``: what ``outbound.ports.SigningKey`` carries to the signer.

Errors (``SecretError``, a ValueError) name a key id at most, never key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from outbound.ports import SigningKey

__all__ = [
    "SCHEMES",
    "BadSecretToken",
    "SecretBox",
    "SecretError",
    "UnknownKey",
    "generate",
    "public_key",
    "signing_key",
]

SCHEMES = ("v1", "v1a")
SECRET_BYTES = 32
V1_PREFIX, V1A_PRIVATE, V1A_PUBLIC = "whsec_", "whsk_", "whpk_"

# A token: "gcm1:<kid>:<base64url(nonce + ciphertext + tag)>".
_FORMAT = "gcm1"
_NONCE_BYTES = 12
_KID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class SecretError(ValueError):
    """A secret or a master key that cannot be used; the message names a key id at most."""


class UnknownKey(SecretError):
    """A stored secret was encrypted under a key id the ring no longer holds."""


class BadSecretToken(SecretError):
    """A stored secret is damaged, tampered with, or belongs to another endpoint."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, *, urlsafe: bool = False) -> bytes:
    """Strict base64 (padding optional for the url-safe form); ValueError when it is not."""
    try:
        if urlsafe:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def generate(scheme: str) -> tuple[str, str]:
    """A new signing secret of `scheme`: (what to store encrypted, what to show the user)."""
    if scheme == "v1":
        secret = V1_PREFIX + _b64(os.urandom(SECRET_BYTES))
        return secret, secret
    if scheme == "v1a":
        key = Ed25519PrivateKey.generate()
        stored = V1A_PRIVATE + _b64(key.private_bytes_raw())
        return stored, V1A_PUBLIC + _b64(key.public_key().public_bytes_raw())
    raise SecretError(f"unknown signing scheme {scheme[:10]!r}: give one of {', '.join(SCHEMES)}")


def signing_key(stored: str) -> SigningKey:
    """The key a stored secret signs with: v1, the HMAC bytes; v1a, the ed25519 seed."""
    for prefix, scheme in ((V1_PREFIX, "v1"), (V1A_PRIVATE, "v1a")):
        if stored.startswith(prefix):
            try:
                material = _unb64(stored.removeprefix(prefix))
            except ValueError:
                break
            if scheme == "v1a" and len(material) != SECRET_BYTES:
                break
            if scheme == "v1" and not material:
                break
            return SigningKey(scheme, material)
    raise SecretError("a stored signing secret is malformed (neither whsec_ nor whsk_ base64)")


def public_key(stored: str) -> str:
    """What the user was shown for a stored secret: the v1 secret itself, or the v1a
    public key (``whpk_``)."""
    key = signing_key(stored)
    if key.scheme == "v1":
        return stored
    public = Ed25519PrivateKey.from_private_bytes(key.material).public_key()
    return V1A_PUBLIC + _b64(public.public_bytes_raw())


class SecretBox:
    """AES-GCM under a ring of master keys, the first one newest (it encrypts)."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise SecretError("no encryption key: give at least one kid:base64-of-32-bytes")
        ring: dict[str, AESGCM] = {}
        for kid, material in keys:
            if not _KID.fullmatch(kid):
                raise SecretError("a key id is 1-32 of A-Z a-z 0-9 _ -")
            if kid in ring:
                raise SecretError(f"key id {kid!r} is given twice: each key id once")
            if len(material) != SECRET_BYTES:
                raise SecretError(f"key {kid!r} is not 32 bytes (base64 of 32 random bytes)")
            ring[kid] = AESGCM(material)
        self._ring = ring
        self.newest = keys[0][0]
        self.kids = tuple(ring)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> SecretBox:
        """From ``kid:base64`` entries (WEBHOOK_ENCRYPTION_KEYS' form), newest first."""
        keys: list[tuple[str, bytes]] = []
        for number, entry in enumerate(entries, start=1):
            kid, sep, encoded = entry.strip().partition(":")
            if not sep or not _KID.fullmatch(kid):
                raise SecretError(
                    f"entry {number} is not kid:base64 (a key id of 1-32 A-Z a-z 0-9 _ -)"
                )
            try:
                material = _unb64(encoded.strip())
            except ValueError:
                raise SecretError(f"key {kid!r} is not base64") from None
            keys.append((kid, material))
        return cls(keys)

    def encrypt(self, plain: str, *, aad: str) -> str:
        """A text token of `plain` under the newest key, bound to `aad` (the endpoint id)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ring[self.newest].encrypt(nonce, plain.encode(), _aad(self.newest, aad))
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{_FORMAT}:{self.newest}:{body}"

    def decrypt(self, token: str, *, aad: str) -> str:
        """The plain text of a token made by `encrypt` with the same `aad`."""
        kid = self.kid_of(token)
        key = self._ring.get(kid)
        if key is None:
            raise UnknownKey(
                f"a stored webhook secret is encrypted under key {kid!r}, which "
                "WEBHOOK_ENCRYPTION_KEYS does not hold: put that key back (after the newest)"
            )
        try:
            raw = _unb64(token.split(":", 2)[2], urlsafe=True)
            if len(raw) <= _NONCE_BYTES:
                raise ValueError("too short")
            plain = key.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(kid, aad))
            return plain.decode()
        except (InvalidTag, ValueError):
            raise BadSecretToken(
                f"a stored webhook secret does not decrypt under key {kid!r}: it was altered, "
                "copied from another endpoint, or that key id now names another key"
            ) from None

    def kid_of(self, token: str) -> str:
        """The key id a token was made under (BadSecretToken if it is no token)."""
        parts = token.split(":", 2)
        if len(parts) != 3 or parts[0] != _FORMAT or not _KID.fullmatch(parts[1]):
            raise BadSecretToken("a stored webhook secret is not an encrypted token (damaged?)")
        return parts[1]


def _aad(kid: str, aad: str) -> bytes:
    return f"{_FORMAT}\n{kid}\n{aad}".encode()
