"""Verified webhooks the gateway's mapping cannot place: accepted and parked for review.

A gateway retries every answer but a 2xx for days, so an authentic event that `notice_for`
refuses (a Stripe `payment_intent.succeeded` without `metadata.order_id`, a body without a
`type`) is not answered 422: `unmapped_notice` makes it a notice of kind "unmapped" (its
webhook id, its event type and what the mapping said, never a value), which is accepted
like any other (the `payment_webhooks` row with the raw body, the event, its outbox row).
The payments group's `process-payment-webhook` then fails it at once with reason
`unmapped_event`, for an operator to review. `outbox failed retry` runs the job again, and
the job maps the stored, verified body again with `remap_stored` (handed to jobs as
`AppConfig.payment_mapping`: jobs may not import web), so a fixed mapping places it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from domain.payments import PaymentNotice
from web.errors import WebError
from web.gateways import notice_for
from web.signatures import StandardWebhooks, Verified

__all__ = ["REASON_CHARS", "remap_stored", "unmapped_notice"]

# PaymentNotice.reason holds at most this much of what the mapping said.
REASON_CHARS = 200


def unmapped_notice(
    gateway: str, verified: Verified, document: dict[str, Any], problem: str
) -> PaymentNotice | None:
    """The notice of kind "unmapped" for a verified body the mapping refused with
    `problem` (field names, never values); None when the body has no usable webhook id
    (nothing to store it under, so it stays refused)."""
    webhook_id = verified.webhook_id if verified.webhook_id is not None else document.get("id")
    gateway_type = document.get("type")
    if not isinstance(gateway_type, str) or not 0 < len(gateway_type) <= 100:
        gateway_type = "(no type)"
    try:
        return PaymentNotice(
            gateway=gateway,
            webhook_id=webhook_id,
            kind="unmapped",
            gateway_type=gateway_type,
            reason=problem[:REASON_CHARS],
            sent_at=verified.sent_at,
        )
    except ValidationError:
        return None


def remap_stored(
    gateway: str, scheme: str, body: str, webhook_id: str, sent_at: datetime
) -> PaymentNotice:
    """Map a stored, verified body again with the mapping of the code now running. Raises
    ValueError (naming fields, never values) if it still cannot place it, or if it would
    now be another webhook than the one stored."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the stored body is not JSON (or is no longer kept)") from None
    signed_id = webhook_id if scheme == StandardWebhooks.name else None
    verified = Verified(scheme, sent_at, -1, {}, webhook_id=signed_id)
    try:
        notice = notice_for(gateway, verified, document)
    except WebError as exc:
        raise ValueError(str(exc)) from None
    if notice.webhook_id != webhook_id:
        raise ValueError("the mapping now gives the stored body another webhook id")
    return notice
