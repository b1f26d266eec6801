"""Webhook signature schemes and normalised notices, without a server: what verifies, what is
refused and with which error, for any body and any header text (hypothesis)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.webhook_helpers import (
    NEW_SECRET,
    OLD_SECRET,
    WRONG_SECRET,
    payment_body,
    standard_headers,
    stripe_body,
    stripe_headers,
)
from web.errors import BadRequest, MalformedSignature, Unauthorized, Unprocessable, WebError
from web.gateways import notice_for
from web.signatures import StandardWebhooks, StripeSignature

SECRETS = [SecretStr(OLD_SECRET), SecretStr(NEW_SECRET)]
STANDARD = StandardWebhooks(SECRETS)
STRIPE = StripeSignature(SECRETS)


def _now() -> datetime:
    return datetime.now(UTC)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=60, deadline=None)
@given(body=st.binary(min_size=1, max_size=2000).filter(_utf8))
def test_any_signed_body_verifies_and_any_change_to_it_does_not(body: bytes) -> None:
    headers = standard_headers(body)
    assert STANDARD.verify(body, headers, _now()).webhook_id == headers["webhook-id"]
    changed = body[:-1] + bytes([(body[-1] + 1) % 128])
    if changed != body and _utf8(changed):
        with pytest.raises(Unauthorized):
            STANDARD.verify(changed, headers, _now())
    stripe = stripe_headers(body)
    assert STRIPE.verify(body, stripe, _now()).scheme == "stripe"
    with pytest.raises(Unauthorized):
        STRIPE.verify(body + b" ", stripe, _now())


@settings(max_examples=200, deadline=None)
@given(
    msg_id=st.text(max_size=300),
    stamp=st.text(max_size=30),
    signature=st.text(max_size=400),
    stripe=st.text(max_size=400),
)
def test_hostile_headers_are_refused_with_a_web_error_never_a_crash(
    msg_id: str, stamp: str, signature: str, stripe: str
) -> None:
    body = b'{"type": "payment.succeeded"}'
    headers = {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": signature}
    with pytest.raises(WebError) as refused:
        STANDARD.verify(body, headers, _now())
    assert refused.value.status in (400, 401)
    with pytest.raises(WebError) as refused:
        STRIPE.verify(body, {"stripe-signature": stripe}, _now())
    assert refused.value.status in (400, 401)


def test_a_rotated_secret_old_and_new_both_verify_and_the_index_says_which() -> None:
    body = payment_body("succeeded", "o-1", "pay-1", 100)
    assert (
        STANDARD.verify(body, standard_headers(body, secret=OLD_SECRET), _now()).secret_index == 0
    )
    assert (
        STANDARD.verify(body, standard_headers(body, secret=NEW_SECRET), _now()).secret_index == 1
    )
    only_new = StripeSignature([SecretStr(NEW_SECRET)])
    assert only_new.verify(body, stripe_headers(body, secrets=(NEW_SECRET,)), _now())
    with pytest.raises(Unauthorized):
        only_new.verify(body, stripe_headers(body, secrets=(OLD_SECRET,)), _now())


def test_several_signatures_in_one_header_verify_if_one_matches() -> None:
    body = payment_body("succeeded", "o-1", "pay-1", 100)
    wrong = standard_headers(body, secret=WRONG_SECRET)
    good = standard_headers(body, msg_id=wrong["webhook-id"], at=int(wrong["webhook-timestamp"]))
    both = {
        **good,
        "webhook-signature": f"{wrong['webhook-signature']} {good['webhook-signature']}",
    }
    assert STANDARD.verify(body, both, _now())
    stripe = stripe_headers(body, secrets=(WRONG_SECRET, NEW_SECRET))
    assert STRIPE.verify(body, stripe, _now()).secret_index == 1


@pytest.mark.parametrize("offset_s", [-301, 301, -3600, 86400])
def test_stale_and_future_timestamps_are_refused_both_ways(offset_s: int) -> None:
    body = payment_body("succeeded", "o-1", "pay-1", 100)
    at = time.time() + offset_s
    with pytest.raises(Unauthorized, match=r"stale|future"):
        STANDARD.verify(body, standard_headers(body, at=at), _now())
    with pytest.raises(Unauthorized, match=r"stale|future"):
        STRIPE.verify(body, stripe_headers(body, at=at), _now())


def test_within_the_tolerance_both_ways_is_accepted() -> None:
    body = payment_body("succeeded", "o-1", "pay-1", 100)
    for offset_s in (-290, 290):
        # The injected clock moves instead of the signature (the package checks the real one).
        now = _now() - timedelta(seconds=offset_s)
        assert STANDARD.verify(body, standard_headers(body), now)
        assert STRIPE.verify(body, stripe_headers(body), now)


def test_missing_headers_are_unauthorized_and_malformed_ones_a_bad_request() -> None:
    body = b"{}"
    with pytest.raises(Unauthorized, match="missing"):
        STANDARD.verify(body, {}, _now())
    with pytest.raises(Unauthorized, match="missing"):
        STRIPE.verify(body, {}, _now())
    good = standard_headers(body)
    for bad in ({"webhook-signature": "v1"}, {"webhook-timestamp": "soon"}):
        with pytest.raises(MalformedSignature):
            STANDARD.verify(body, {**good, **bad}, _now())
    with pytest.raises(MalformedSignature):
        STRIPE.verify(body, {"stripe-signature": "t=1,v1=nothex"}, _now())


def test_a_bad_standard_webhooks_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="PAYMENT_WEBHOOK_SECRET") as raised:
        StandardWebhooks([SecretStr("whsec_not base64!")])
    assert "not base64!" not in str(raised.value)


# -- notices ------------------------------------------------------------------------------


def _verified(scheme: StandardWebhooks | StripeSignature, body: bytes) -> object:
    headers = standard_headers(body) if scheme is STANDARD else stripe_headers(body)
    return scheme.verify(body, headers, _now())


def test_standard_and_stripe_bodies_become_the_same_notice() -> None:
    standard = payment_body("succeeded", "o-1", "pi_1", 2599, currency="eur")
    notice = notice_for("standard", _verified(STANDARD, standard), json.loads(standard))  # type: ignore[arg-type]
    stripe = stripe_body(
        "payment_intent.succeeded",
        {
            "id": "pi_1",
            "amount_received": 2599,
            "currency": "eur",
            "metadata": {"order_id": "o-1"},
            "billing_details": {"name": "Wile E. Coyote", "email": "wile@example.com"},
        },
    )
    from_stripe = notice_for("stripe", _verified(STRIPE, stripe), json.loads(stripe))  # type: ignore[arg-type]
    for n in (notice, from_stripe):
        assert (n.kind, n.order_id, n.payment_id, n.amount_cents) == (
            "succeeded",
            "o-1",
            "pi_1",
            2599,
        )
    assert "Wile" not in from_stripe.model_dump_json()  # personal data is not copied


def test_stripe_refunds_and_failures_are_read_from_their_objects() -> None:
    refund = stripe_body(
        "charge.refunded",
        {
            "id": "ch_1",
            "payment_intent": "pi_1",
            "amount_refunded": 500,
            "metadata": {"order_id": "o-1"},
        },
    )
    notice = notice_for("stripe", _verified(STRIPE, refund), json.loads(refund))  # type: ignore[arg-type]
    # Stripe's amount_refunded is the charge's cumulative total, not this refund's.
    assert (notice.kind, notice.payment_id, notice.refunded_total_cents) == (
        "refunded",
        "pi_1",
        500,
    )
    failed = stripe_body(
        "payment_intent.payment_failed",
        {
            "id": "pi_2",
            "metadata": {"order_id": "o-1"},
            "last_payment_error": {"code": "card_declined"},
        },
    )
    notice = notice_for("stripe", _verified(STRIPE, failed), json.loads(failed))  # type: ignore[arg-type]
    assert (notice.kind, notice.reason) == ("failed", "card_declined")


def test_unknown_event_types_are_kind_other_and_incomplete_notices_unprocessable() -> None:
    other = json.dumps({"type": "customer.updated", "data": {"email": "x@example.com"}}).encode()
    assert notice_for("standard", _verified(STANDARD, other), json.loads(other)).kind == "other"  # type: ignore[arg-type]
    incomplete = payment_body("succeeded", "o-1", "pay-1")  # no amount
    with pytest.raises(Unprocessable, match="amount_cents"):
        notice_for("standard", _verified(STANDARD, incomplete), json.loads(incomplete))  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        notice_for("standard", _verified(STANDARD, b"[1]"), [1])  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    document=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_verified_json_is_a_notice_or_a_clear_refusal(document: object) -> None:
    body = json.dumps({"type": "payment.succeeded", "data": document}).encode()
    try:
        notice_for("standard", _verified(STANDARD, body), json.loads(body))  # type: ignore[arg-type]
    except WebError as exc:
        refused = exc.status
    else:
        refused = None
    assert refused in (None, 400, 422)
