"""Webhook signatures, checked over the raw body before anything parses it.

Two schemes; each gateway has its own list of secrets (PAYMENT_WEBHOOK_SECRETS__<GATEWAY>),
so that a secret can be rotated (old and new both verify during the overlap), a timestamp
tolerance of 300 s in both directions, and constant-time comparisons (`hmac.compare_digest`):

- Standard Webhooks (`standardwebhooks`): `webhook-id`, `webhook-timestamp`,
  `webhook-signature` ("v1,<base64>" entries separated by spaces), HMAC-SHA256 over
  `id.timestamp.body` with the base64 secret after `whsec_`.
- Stripe-style: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 over
  `t.body` with the secret's bytes.

Missing, forged, stale and future signatures are `Unauthorized` (401); headers that cannot
be read are `MalformedSignature` (400). The messages never echo a signature or a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from web.errors import MalformedSignature, Unauthorized

__all__ = [
    "SCHEMES",
    "TOLERANCE_S",
    "Scheme",
    "StandardWebhooks",
    "StripeSignature",
    "Verified",
    "make_scheme",
]

TOLERANCE_S = 300
# More signatures than this in one header is not a rotation, it is an attack on our CPU.
MAX_SIGNATURES = 8
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_STANDARD_ENTRY = re.compile(r"^v[0-9]+,[A-Za-z0-9+/=]{1,200}$")
_STRIPE_ENTRY = re.compile(r"^([a-z0-9]{1,8})=([A-Za-z0-9]{1,200})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Verified:
    """What the signature vouches for."""

    scheme: str
    sent_at: datetime
    # Which configured secret matched (0: the first): shows how far a rotation has got.
    secret_index: int
    # The scheme's headers as received (stored with the body; never logged).
    headers: dict[str, str] = field(default_factory=dict)
    # Standard Webhooks signs the message id; Stripe-style carries it in the body.
    webhook_id: str | None = None


class Scheme(Protocol):
    name: str

    def verify(
        self, body: bytes, headers: Mapping[str, str], now: datetime
    ) -> Verified: ...  # pragma: no cover - protocol


def _timestamp(value: str, now: datetime) -> datetime:
    if not _TIMESTAMP.match(value):
        raise MalformedSignature("the signature timestamp is not a Unix time in seconds")
    sent = datetime.fromtimestamp(int(value), tz=UTC)
    skew = (now - sent).total_seconds()
    if skew > TOLERANCE_S:
        raise Unauthorized(f"the signature is stale (older than {TOLERANCE_S} s)")
    if skew < -TOLERANCE_S:
        raise Unauthorized(f"the signature is from the future (more than {TOLERANCE_S} s ahead)")
    return sent


class StandardWebhooks:
    name = "standard-webhooks"
    HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")

    def __init__(
        self, secrets: Sequence[SecretStr], setting: str = "PAYMENT_WEBHOOK_SECRETS"
    ) -> None:
        try:
            self._hooks = [Webhook(secret.get_secret_value()) for secret in secrets]
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{setting}: a Standard Webhooks secret is whsec_ and base64") from exc

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> Verified:
        values = {name: headers.get(name, "") for name in self.HEADERS}
        if not all(values.values()):
            raise Unauthorized("missing webhook-id, webhook-timestamp or webhook-signature")
        msg_id, stamp, signature = values.values()
        if len(msg_id) > 255 or not msg_id.isprintable():
            raise MalformedSignature("webhook-id: at most 255 printable characters")
        sent = _timestamp(stamp, now)
        entries = signature.split(" ")
        if len(entries) > MAX_SIGNATURES or not all(map(_STANDARD_ENTRY.match, entries)):
            raise MalformedSignature(
                f"webhook-signature: up to {MAX_SIGNATURES} 'v1,<base64>' entries, space-separated"
            )
        try:
            for entry in entries:
                base64.b64decode(entry.split(",", 1)[1], validate=True)
        except binascii.Error:
            raise MalformedSignature("webhook-signature: an entry is not base64") from None
        text = body.decode("utf-8")  # the caller has checked it is UTF-8
        for index, hook in enumerate(self._hooks):
            try:
                hook.verify(text, values, json_parse=False)
            except WebhookVerificationError:
                continue
            return Verified(self.name, sent, index, values, webhook_id=msg_id)
        raise Unauthorized("no webhook-signature matches")


class StripeSignature:
    name = "stripe"
    HEADER = "stripe-signature"

    def __init__(
        self, secrets: Sequence[SecretStr], setting: str = "PAYMENT_WEBHOOK_SECRETS"
    ) -> None:
        self._keys = [secret.get_secret_value().encode() for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> Verified:
        header = headers.get(self.HEADER, "")
        if not header:
            raise Unauthorized("missing Stripe-Signature")
        stamp, candidates = self._parse(header)
        sent = _timestamp(stamp, now)
        signed = stamp.encode() + b"." + body
        for index, key in enumerate(self._keys):
            expected = hmac.new(key, signed, hashlib.sha256).hexdigest()
            # Every candidate is compared (no early exit inside one key's comparisons).
            matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
            if any(matches):
                return Verified(self.name, sent, index, {self.HEADER: header})
        raise Unauthorized("no Stripe-Signature v1 matches")

    @staticmethod
    def _parse(header: str) -> tuple[str, list[str]]:
        parts = header.split(",")
        if len(parts) > MAX_SIGNATURES + 2:
            raise MalformedSignature("Stripe-Signature: too many entries")
        stamps: list[str] = []
        candidates: list[str] = []
        for part in parts:
            match = _STRIPE_ENTRY.match(part.strip())
            if match is None:
                raise MalformedSignature("Stripe-Signature: expected t=<unix>,v1=<hex>,...")
            key, value = match.groups()
            if key == "t":
                stamps.append(value)
            elif key == "v1":
                if not _HEX64.match(value):
                    raise MalformedSignature("Stripe-Signature: v1 is 64 hex digits")
                candidates.append(value)
        if len(stamps) != 1 or not candidates:
            raise MalformedSignature("Stripe-Signature: one t= and at least one v1= are needed")
        return stamps[0], candidates


SCHEMES: dict[str, Callable[[Sequence[SecretStr], str], Scheme]] = {
    StandardWebhooks.name: StandardWebhooks,
    StripeSignature.name: StripeSignature,
}


def make_scheme(
    name: str, secrets: Sequence[SecretStr], setting: str = "PAYMENT_WEBHOOK_SECRETS"
) -> Scheme:
    """A gateway's scheme with ITS OWN secrets (`setting` names them in errors): one
    instance per gateway, so a secret of one gateway never verifies another's deliveries."""
    try:
        factory = SCHEMES[name]
    except KeyError:
        raise ValueError(
            f"PAYMENT_GATEWAYS: unknown signature scheme {name!r}; use {', '.join(SCHEMES)}"
        ) from None
    return factory(secrets, setting)
