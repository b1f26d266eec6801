"""What each gateway's verified body says, as a domain `PaymentNotice`.

A gateway is configured with a signature scheme (PAYMENT_GATEWAYS), and the scheme decides
the body's format too:

- `standard-webhooks`: `{"type": "payment.succeeded" | "payment.failed" | "payment.refunded",
  "data": {"payment_id", "order_id", "amount_cents", "currency", "failure_reason"}}`, the
  webhook id being the signed `webhook-id` header.
- `stripe`: a Stripe event, `{"id": "evt_...", "type": ..., "data": {"object": {...}}}`:
  `payment_intent.succeeded` (amount_received), `payment_intent.payment_failed`
  (last_payment_error.code), `charge.refunded` (payment_intent, amount_refunded), the
  order id in the object's `metadata.order_id`.

Any other event type is accepted as kind "other" (stored, and ignored by the payments
group), so a gateway that sends everything is not answered with errors it would retry.
Only reference fields are read: names, addresses and card details are never copied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from domain.payments import PaymentKind, PaymentNotice
from web.errors import BadRequest, Unprocessable
from web.signatures import Verified

__all__ = ["NORMALISERS", "notice_for"]

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
            "amount_cents": data.get("amount_cents"),
            "currency": data.get("currency"),
            "reason": data.get("failure_reason") if kind == "failed" else None,
        }
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
    fields |= {"order_id": metadata.get("order_id"), "currency": obj.get("currency")}
    if kind == "refunded":
        fields |= {
            "payment_id": obj.get("payment_intent"),
            "amount_cents": obj.get("amount_refunded"),
        }
    else:
        fields |= {"payment_id": obj.get("id"), "amount_cents": obj.get("amount_received")}
    if kind == "succeeded" and fields["amount_cents"] is None:
        fields["amount_cents"] = obj.get("amount")
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
