"""What each gateway's verified body says, as a domain `PaymentNotice`.

A gateway is configured with a signature scheme (PAYMENT_GATEWAYS), and the scheme decides
the body's format too:

- `standard-webhooks`: `{"type": "payment.succeeded" | "payment.failed" | "payment.refunded",
  "data": {"payment_id", "order_id", "amount_cents", "currency", "failure_reason",
  "refund_id"}}`, the webhook id being the signed `webhook-id` header; `currency` upper
  case (ISO 4217), a refund's `amount_cents` that refund's own, keyed by `refund_id`.
- `stripe`: a Stripe event, `{"id": "evt_...", "type": ..., "data": {"object": {...}}}`:
  `payment_intent.succeeded` (amount_received), `payment_intent.payment_failed`
  (last_payment_error.code), `charge.refunded` (payment_intent, the cumulative
  amount_refunded and, when Stripe includes it, the `refunds` list), the order id in the
  object's `metadata.order_id`. Stripe sends currencies in lower case: "jpy" becomes "JPY"
  here (only for Stripe).

Money is parsed strictly (the body is what was verified, and it must read one way only): a
JSON object repeating a key is refused with 400 (the last value would silently win), as is
NaN or Infinity; an amount must be a JSON integer in the currency's minor unit (4900 JPY is
4900): a string, a boolean or a float is refused with 400. Whether the currency is the
order's is decided when the notice is applied (a failed job for review, never a 4xx).

Any other event type is accepted as kind "other" (stored, and ignored by the payments
group), so a gateway that sends everything is not answered with errors it would retry.
Only reference fields are read: names, addresses and card details are never copied.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from domain.payments import PaymentKind, PaymentNotice
from web.errors import BadRequest, Unprocessable
from web.signatures import Verified

__all__ = ["NORMALISERS", "notice_for", "parse_document"]

_STANDARD_KINDS: dict[str, PaymentKind] = {
    "payment.succeeded": "succeeded",
    "payment.failed": "failed",
    "payment.refunded": "refunded",
}
_STRIPE_KINDS: dict[str, PaymentKind] = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "charge.refunded": "refunded",
}


class _DuplicateKey(Exception):
    """A JSON object names one key twice (not a ValueError: it is told apart from bad JSON)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a payment can carry")


def parse_document(text: str) -> Any:
    """The verified body as JSON, read one way only: 400 for a body that is not JSON, that
    repeats a key in an object, or that holds NaN or Infinity."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _DuplicateKey:
        raise BadRequest(
            "the body repeats a key within a JSON object, so it could be read two ways: refused"
        ) from None
    except (ValueError, RecursionError):
        raise BadRequest("the body is not JSON") from None


def _amount(value: Any, where: str) -> int | None:
    """A JSON integer (or absent); "4900", true and 49.0 are not amounts."""
    if value is None or type(value) is int:
        return value
    raise BadRequest(f"{where} must be a JSON integer in the currency's minor unit")


def _stripe_currency(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 3 and value.isascii() and value.islower():
        return value.upper()
    return value  # anything else is checked (and refused) when the notice is applied


def _stripe_refunds(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The refunds Stripe listed with the charge (when it includes them), failed and
    cancelled ones left out: they gave nothing back."""
    listed = _object(obj.get("refunds"), "data.object.refunds").get("data")
    if listed is None:
        return []
    if not isinstance(listed, list):
        raise Unprocessable("data.object.refunds.data must be a JSON array")
    lines = []
    for item in listed:
        refund = _object(item, "data.object.refunds.data[]")
        if refund.get("status") in ("failed", "canceled"):
            continue
        amount = _amount(refund.get("amount"), "data.object.refunds.data[].amount")
        lines.append({"refund_id": refund.get("id"), "amount_cents": amount})
    return lines


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unprocessable(f"{where} must be a JSON object")
    return value


def _type(document: dict[str, Any]) -> str:
    kind = document.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= 100:
        raise Unprocessable("the body needs a string 'type' (1 to 100 characters)")
    return kind


def _standard(gateway: str, verified: Verified, document: dict[str, Any]) -> dict[str, Any]:
    gateway_type = _type(document)
    kind = _STANDARD_KINDS.get(gateway_type, "other")
    fields: dict[str, Any] = {"webhook_id": verified.webhook_id, "gateway_type": gateway_type}
    fields["kind"] = kind
    if kind != "other":
        data = _object(document.get("data"), "data")
        fields |= {
            "payment_id": data.get("payment_id"),
            "order_id": data.get("order_id"),
            "amount_cents": _amount(data.get("amount_cents"), "data.amount_cents"),
            "currency": data.get("currency"),
            "reason": data.get("failure_reason") if kind == "failed" else None,
        }
        if kind == "refunded":
            fields["refund_id"] = data.get("refund_id")
    return fields


def _stripe(gateway: str, verified: Verified, document: dict[str, Any]) -> dict[str, Any]:
    gateway_type = _type(document)
    kind = _STRIPE_KINDS.get(gateway_type, "other")
    fields: dict[str, Any] = {"webhook_id": document.get("id"), "gateway_type": gateway_type}
    fields["kind"] = kind
    if kind == "other":
        return fields
    obj = _object(_object(document.get("data"), "data").get("object"), "data.object")
    metadata = _object(obj.get("metadata"), "data.object.metadata")
    currency = _stripe_currency(obj.get("currency"))
    fields |= {"order_id": metadata.get("order_id"), "currency": currency}
    where = "data.object."
    if kind == "refunded":
        return fields | {
            "payment_id": obj.get("payment_intent"),
            "refunded_total_cents": _amount(obj.get("amount_refunded"), where + "amount_refunded"),
            "refunds": _stripe_refunds(obj),
        }
    received = _amount(obj.get("amount_received"), where + "amount_received")
    fields |= {"payment_id": obj.get("id"), "amount_cents": received}
    if kind == "succeeded" and fields["amount_cents"] is None:
        fields["amount_cents"] = _amount(obj.get("amount"), where + "amount")
    if kind == "failed":
        error = _object(obj.get("last_payment_error"), "last_payment_error")
        fields["reason"] = error.get("decline_code") or error.get("code") or "declined"
        fields["amount_cents"] = None
    return fields


NORMALISERS: dict[str, Callable[[str, Verified, dict[str, Any]], dict[str, Any]]] = {
    "standard-webhooks": _standard,
    "stripe": _stripe,
}


def notice_for(gateway: str, verified: Verified, document: Any) -> PaymentNotice:
    """The verified, parsed body as a notice; 400 if it is not a JSON object, 422 if it is
    not a notice of its gateway's format (the error names fields, never their values)."""
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object")
    fields = NORMALISERS[verified.scheme](gateway, verified, document)
    try:
        return PaymentNotice.model_validate(
            {**fields, "gateway": gateway, "sent_at": verified.sent_at}
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise Unprocessable(f"not a {verified.scheme} payment notice: {problems}") from None
