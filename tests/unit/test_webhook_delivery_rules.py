"""The delivery rules that need no database: subscription patterns, the webhook id, the
envelope, and the retry schedule with its jitter and Retry-After (ADR 021)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.events import DomainEvent, RecordedEvent
from domain.ordering import OrderPaid
from domain.products import ProductImageUploaded
from domain.tenancy import TenantApproved
from jobs.webhook_fanout import tenant_of
from outbound.config import WebhookConfig
from outbound.deliveries import envelope, webhook_id_for
from outbound.endpoint_rules import subscribed
from outbound.health import next_delay
from outbound.ports import Outcome, SendResult

ALL = WebhookConfig(excluded_event_types=())  # no type excluded: the patterns alone
NAME = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (("order.paid",), "order.paid", True),
        (("order.paid",), "order.placed", False),
        (("order.*",), "order.paid", True),
        (("order.*",), "order", False),
        (("order.*",), "orders.paid", False),
        (("*",), "tenant.onboarded", True),
        ((), "order.paid", False),
        (("product.*", "order.paid"), "order.paid", True),
    ],
)
def test_patterns_match_exact_prefix_and_everything(
    patterns: tuple[str, ...], event_type: str, expected: bool
) -> None:
    assert subscribed(patterns, event_type, ALL) is expected


@given(NAME, NAME, NAME)
def test_a_prefix_matches_exactly_its_own_types(aggregate: str, other: str, action: str) -> None:
    assert subscribed([f"{aggregate}.*"], f"{aggregate}.{action}", ALL)
    assert subscribed([f"{aggregate}.*"], f"{other}.{action}", ALL) is (other == aggregate)
    assert not subscribed([f"{aggregate}.{action}"], f"{aggregate}.{action}x", ALL)


@given(st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=40))
def test_the_webhook_id_is_stable_and_bounded(event_id: str, endpoint_id: str) -> None:
    first = webhook_id_for(event_id, endpoint_id)
    assert first == webhook_id_for(event_id, endpoint_id)
    assert first.startswith("msg_")
    assert len(first) == 36
    assert first != webhook_id_for(event_id + "x", endpoint_id)


def test_the_envelope_is_canonical_json_with_a_utc_z_timestamp() -> None:
    at = datetime(2026, 3, 1, 14, 30, 5, 120000, tzinfo=timezone(timedelta(hours=2)))
    body = envelope("ev-1", "order.paid", at, {"b": 1, "a": "é"})
    assert (
        body
        == (
            '{"data":{"a":"é","b":1},"id":"ev-1","timestamp":"2026-03-01T12:30:05.120000Z",'
            '"type":"order.paid"}'
        ).encode()
    )
    assert json.loads(body)["timestamp"].endswith("Z")


CONFIG = WebhookConfig(schedule_s=(0, 5, 300, 1800), jitter=0.1, max_retry_after_s=600)
FAILED = SendResult(Outcome.FAILED, 500, 3)


@given(st.integers(1, 3), st.integers(0, 2**32))
def test_the_next_try_follows_the_schedule_within_the_jitter(attempts: int, seed: int) -> None:
    delay = next_delay(CONFIG, attempts, FAILED, random.Random(seed))
    base = CONFIG.schedule_s[attempts]
    assert delay is not None
    assert base * 0.9 <= delay <= base * 1.1


def test_after_the_last_step_there_is_no_next_try() -> None:
    assert next_delay(CONFIG, 4, FAILED, random.Random(1)) is None


@given(st.floats(0, 10**7, allow_nan=False), st.integers(0, 2**32))
def test_retry_after_is_honoured_and_capped(retry_after: float, seed: int) -> None:
    throttled = SendResult(Outcome.THROTTLED, 429, 3, retry_after_s=retry_after)
    delay = next_delay(CONFIG, 1, throttled, random.Random(seed))
    assert delay is not None
    assert delay >= min(retry_after, CONFIG.max_retry_after_s)
    assert delay <= max(CONFIG.max_retry_after_s, 5 * 1.1)


def test_jitter_spreads_the_retries() -> None:
    rng = random.Random(7)
    delays = {next_delay(CONFIG, 2, FAILED, rng) for _ in range(50)}
    assert len(delays) > 40


def _recorded(event: DomainEvent, aggregate: str, metadata: dict[str, str]) -> RecordedEvent:
    return RecordedEvent("ev-1", aggregate, "agg-1", 1, event, datetime.now(UTC), metadata)


def test_the_tenant_is_the_payloads_else_the_aggregates_owner_else_the_tenant_itself() -> None:
    paid = OrderPaid(payment_ref="p-1", amount_cents=100)
    assert tenant_of(_recorded(paid, "order", {"tenant_id": "t-meta"})) == "t-meta"
    assert tenant_of(_recorded(paid, "order", {})) is None
    approved = TenantApproved()
    assert tenant_of(_recorded(approved, "tenant", {})) == "agg-1"
    placed = ProductImageUploaded(tenant_id="t-payload", image_path="a.png")
    assert tenant_of(_recorded(placed, "product", {"tenant_id": "t-meta"})) == "t-payload"
