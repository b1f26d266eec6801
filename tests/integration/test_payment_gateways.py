"""Issue 24, items 3, 4 and 9 through the real receiver (`build_web_app` in Starlette's
TestClient) on PostgreSQL: one secret ring per gateway, each rotated on its own, the
deprecated PAYMENT_WEBHOOK_SECRET serving the first gateway only; an authentic event the
mapping cannot place accepted, stored and failed for review (`unmapped_event`), then placed
once by a retry after the mapping is fixed; trailing-slash webhook URLs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from consumers import GROUPS
from consumers.testing import JobRunner
from domain import CommandBus
from domain.ordering import OrderStatus
from domain.schema import orders, payment_ledger, payment_webhooks
from jobs import AppConfig
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK
from pipeline.settings import Settings, load_settings
from pipeline.wiring import build_web_app
from tests.consumer_harness import failed_rows
from tests.queries import count_rows
from tests.scenario import onboard, order, product
from tests.webhook_helpers import (
    NEW_SECRET,
    OLD_SECRET,
    WRONG_SECRET,
    payment_body,
    serve_env,
    serving,
    standard_headers,
    stripe_body,
    stripe_headers,
)
from web import gateways
from web.unmapped import remap_stored

pytestmark = [pytest.mark.integration]
PAYMENTS = GROUPS["payments"]
# Stripe's secrets are used as bytes: any text will do.
STRIPE_OLD = "whsec_stripe-endpoint-secret-old"
STRIPE_NEW = "whsec_stripe-endpoint-secret-new"
TOTAL = 2500


def _settings(engine: Engine, **rings: list[str]) -> Settings:
    return load_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        payment_webhook_secrets=rings,
        outbox_shards=8,
    )


@pytest.fixture
def client_for(postgres_db: Engine) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(settings: Settings) -> TestClient:
        client = TestClient(build_web_app(settings, postgres_db)).__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _place(engine: Engine) -> None:
    bus = CommandBus(engine, shards=8)
    onboard(bus)
    product(bus, "p-1", stock=100)
    bus.dispatch(order({"p-1": 2}, order_id="o-1"))


def _stripe_payment(
    payment_id: str, *, metadata: bool = True, event_id: str | None = None
) -> bytes:
    obj: dict[str, Any] = {"id": payment_id, "amount_received": TOTAL, "currency": "eur"}
    if metadata:
        obj["metadata"] = {"order_id": "o-1"}
    else:
        obj["description"] = "o-1"  # where a (fixed) mapping may find the order
    return stripe_body("payment_intent.succeeded", obj, event_id=event_id)


def _status(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(orders.c.status).where(orders.c.id == "o-1")).scalar_one())


def test_a_standard_webhooks_secret_cannot_sign_a_stripe_delivery_nor_the_reverse(
    postgres_db: Engine, client_for: Any
) -> None:
    # Both secrets could serve either scheme: only the gateway's own ring decides.
    client = client_for(_settings(postgres_db, stripe=[OLD_SECRET], standard=[NEW_SECRET]))
    stripe = _stripe_payment("pi_1")
    standard = payment_body("succeeded", "o-1", "pay-2", TOTAL)

    def answers(secret: str) -> tuple[int, int]:
        to_stripe = client.post("/webhooks/payments/stripe", content=stripe,
                                headers=stripe_headers(stripe, secrets=(secret,)))  # fmt: skip
        to_standard = client.post("/webhooks/payments/standard", content=standard,
                                  headers=standard_headers(standard, secret=secret))  # fmt: skip
        return to_stripe.status_code, to_standard.status_code

    assert answers(NEW_SECRET) == (401, 200)  # the Standard Webhooks gateway's secret
    assert answers(OLD_SECRET) == (200, 401)  # the Stripe gateway's secret
    assert count_rows(postgres_db, payment_webhooks) == 2


def test_rotating_one_gateways_secret_leaves_the_others_alone(
    postgres_db: Engine, client_for: Any
) -> None:
    before = client_for(_settings(postgres_db, stripe=[STRIPE_OLD], standard=[OLD_SECRET]))
    during = client_for(
        _settings(postgres_db, stripe=[STRIPE_NEW, STRIPE_OLD], standard=[OLD_SECRET])
    )
    after = client_for(_settings(postgres_db, stripe=[STRIPE_NEW], standard=[OLD_SECRET]))

    def stripe_answer(client: TestClient, secret: str) -> int:
        body = _stripe_payment(f"pi_{secret[-3:]}")
        headers = stripe_headers(body, secrets=(secret,))
        return client.post("/webhooks/payments/stripe", content=body, headers=headers).status_code

    def standard_answer(client: TestClient) -> int:
        body = payment_body("succeeded", "o-1", "pay-standard", TOTAL)
        return client.post(
            "/webhooks/payments/standard", content=body, headers=standard_headers(body)
        ).status_code

    assert [stripe_answer(before, s) for s in (STRIPE_OLD, STRIPE_NEW)] == [200, 401]
    assert [stripe_answer(during, s) for s in (STRIPE_OLD, STRIPE_NEW)] == [200, 200]
    assert [stripe_answer(after, s) for s in (STRIPE_OLD, STRIPE_NEW)] == [401, 200]
    # The Standard Webhooks gateway's ring was never touched: it verifies throughout.
    assert [standard_answer(c) for c in (before, during, after)] == [200, 200, 200]


def test_the_deprecated_variable_serves_the_first_gateway_only(
    postgres_db: Engine, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", STRIPE_OLD)
    monkeypatch.setenv("PAYMENT_GATEWAYS", "stripe=stripe,standard=standard-webhooks")
    settings = load_settings(
        database_url=postgres_db.url.render_as_string(hide_password=False), outbox_shards=8
    )
    client = client_for(settings)
    body = _stripe_payment("pi_1")
    answer = client.post("/webhooks/payments/stripe", content=body,
                         headers=stripe_headers(body, secrets=(STRIPE_OLD,)))  # fmt: skip
    assert answer.status_code == 200
    standard = payment_body("succeeded", "o-1", "pay-2", TOTAL)
    assert client.post("/webhooks/payments/standard", content=standard,
                       headers=standard_headers(standard)).status_code == 401  # fmt: skip
    notes = settings.webhook_secret_notes()
    assert any("deprecated" in n and "PAYMENT_WEBHOOK_SECRETS__STRIPE" in n for n in notes)
    assert any("'standard' has no secrets" in n for n in notes)
    assert not any(STRIPE_OLD in n for n in notes)
    # A ring of its own wins over the fallback (which is then ignored, and said so).
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRETS__STRIPE", STRIPE_NEW)
    ringed = load_settings()
    assert [s.get_secret_value() for s in ringed.webhook_secret_rings()["stripe"]] == [STRIPE_NEW]
    assert "PAYMENT_WEBHOOK_SECRET is deprecated and ignored here" in ringed.webhook_secret_notes()
    assert ringed.public_view()["PAYMENT_WEBHOOK_SECRETS"] == "********"
    assert STRIPE_NEW in ringed.secret_values()


def test_an_authentic_unplaceable_event_is_parked_then_placed_once_by_a_retry(
    postgres_db: Engine,
    client_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _place(postgres_db)
    client = client_for(_settings(postgres_db, stripe=[STRIPE_OLD], standard=[OLD_SECRET]))
    body = _stripe_payment("pi_parked", metadata=False, event_id="evt_parked")
    for delivery in ("first", "redelivery"):
        answer = client.post("/webhooks/payments/stripe", content=body,
                             headers=stripe_headers(body, secrets=(STRIPE_OLD,)))  # fmt: skip
        assert answer.status_code == 200, (delivery, answer.text)
    assert answer.json()["status"] == "duplicate"
    with postgres_db.connect() as conn:
        [row] = conn.execute(select(payment_webhooks)).all()
    assert (row.kind, row.webhook_id, row.body) == ("unmapped", "evt_parked", body.decode())

    runner = JobRunner(
        postgres_db, config=AppConfig(payment_mapping=remap_stored), groups=[PAYMENTS]
    )
    assert [r.outcome for r in runner.drain(PAYMENTS.name)] == ["failed"]
    [failed] = failed_rows(postgres_db, PAYMENTS.name)
    assert (failed.job_name, failed.reason) == ("process-payment-webhook", "unmapped_event")
    assert "order_id" in failed.exception_message
    assert _status(postgres_db) == OrderStatus.PENDING
    monkeypatch.setenv("DATABASE_URL", postgres_db.url.render_as_string(hide_password=False))
    capsys.readouterr()
    assert main(["failed", "list", "--group", "payments", "--json"]) == EXIT_OK
    assert "unmapped_event" in capsys.readouterr().out  # what an operator sees

    # The mapping is fixed (this Stripe account names the order in `description`)...
    stripe_mapping = gateways.NORMALISERS["stripe"]

    def fixed(gateway: str, verified: Any, document: dict[str, Any]) -> dict[str, Any]:
        fields = stripe_mapping(gateway, verified, document)
        if fields.get("order_id") is None:
            fields["order_id"] = document["data"]["object"].get("description")
        return fields

    monkeypatch.setitem(gateways.NORMALISERS, "stripe", fixed)
    # ...and an operator retries the parked webhook, reviewed.
    retry = ["failed", "retry", str(failed.id), "--reviewed-by", "ann", "--reason", "mapped"]
    assert main(retry) == EXIT_OK
    assert [r.outcome for r in runner.drain(PAYMENTS.name)] == ["done"]
    assert runner.drain(PAYMENTS.name) == []
    assert failed_rows(postgres_db, PAYMENTS.name) == []
    assert _status(postgres_db) == OrderStatus.PAID
    lg = payment_ledger
    with postgres_db.connect() as conn:
        ledger = conn.execute(select(lg.c.kind, lg.c.payment_id, lg.c.amount_cents)).all()
        outcome = conn.execute(select(payment_webhooks.c.outcome)).scalar_one()
    assert [tuple(entry) for entry in ledger] == [("payment", "pi_parked", TOTAL)]
    assert outcome == "applied"


def test_an_unplaceable_body_without_a_webhook_id_is_still_refused(
    postgres_db: Engine, client_for: Any
) -> None:
    client = client_for(_settings(postgres_db, stripe=[STRIPE_OLD]))
    body = b'{"type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}'
    answer = client.post("/webhooks/payments/stripe", content=body,
                         headers=stripe_headers(body, secrets=(STRIPE_OLD,)))  # fmt: skip
    assert answer.status_code == 422
    assert count_rows(postgres_db, payment_webhooks) == 0


def test_trailing_slash_webhook_urls_answer_like_the_others(
    postgres_db: Engine, client_for: Any
) -> None:
    client = client_for(_settings(postgres_db, stripe=[STRIPE_OLD], standard=[OLD_SECRET]))
    body = payment_body("succeeded", "o-1", "pay-1", TOTAL)
    headers = standard_headers(body)
    slashed = client.post("/webhooks/payments/standard/", content=body, headers=headers,
                          follow_redirects=False)  # fmt: skip
    assert (slashed.status_code, slashed.json()["status"]) == (200, "accepted")
    again = client.post("/webhooks/payments/standard", content=body, headers=headers)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    forged = standard_headers(body, secret=WRONG_SECRET)
    for path in ("/webhooks/payments/standard/", "/webhooks/payments/nosuchpay/"):
        answer = client.post(path, content=body, headers=forged, follow_redirects=False)
        assert answer.status_code == (401 if "standard" in path else 404)
    assert count_rows(postgres_db, payment_webhooks) == 1


def test_serve_logs_the_deprecated_variable_at_start_up_without_the_secret(
    postgres_db: Engine, tmp_path: Path
) -> None:
    env = serve_env(postgres_db.url.render_as_string(hide_password=False), tmp_path)
    env.pop("PAYMENT_WEBHOOK_SECRETS__STRIPE")
    env["PAYMENT_WEBHOOK_SECRET"] = STRIPE_OLD
    log = tmp_path / "serve.log"
    with serving(env, log) as server:
        body = _stripe_payment("pi_1")
        headers = stripe_headers(body, secrets=(STRIPE_OLD,))
        assert server.webhook(body, headers, gateway="stripe").status_code == 200
        warned = [line for line in server.log_lines() if line.get("event") == "webhook_secrets"]
    assert any("PAYMENT_WEBHOOK_SECRETS__STRIPE instead" in line["problem"] for line in warned)
    assert STRIPE_OLD not in log.read_text()
