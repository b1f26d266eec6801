"""The payments group on PostgreSQL: webhooks accepted by the real server (relayed through
the embedded broker to a worker), or by the domain (run by consumers.testing, no broker),
are applied by `process-payment-webhook` once, retried, failed for review, and reconciled."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from consumers import GROUPS, JobContext, JobRegistry, jobs
from consumers.messages import ScheduledJobDue
from consumers.testing import JobRunner
from domain import CommandBus, registry
from domain.ordering import OrderStatus
from domain.payments import AcceptPaymentWebhook, PaymentNotice, accept_webhook
from domain.schema import domain_events, orders, payment_ledger, payment_webhooks
from infra.broker import EmbeddedBroker
from outbox.audit import entries
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK, EXIT_USAGE
from tests.consumer_harness import Harness, failed_rows, harness, wait_for
from tests.kafka_helpers import fresh_group
from tests.queries import count_rows
from tests.scenario import onboard, order, product
from tests.webhook_helpers import payment_body, serve_env, serving, standard_headers

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PAYMENTS = GROUPS["payments"]
TOTAL = 2500


def _bus(engine: Engine) -> CommandBus:
    return CommandBus(engine, shards=8)


def _place(engine: Engine, order_id: str = "o-1") -> None:
    bus = _bus(engine)
    onboard(bus)
    product(bus, "p-1", stock=100)
    bus.dispatch(order({"p-1": 2}, order_id=order_id))


def _accept(engine: Engine, webhook_id: str, kind: str, amount: int = TOTAL) -> None:
    notice = PaymentNotice(
        gateway="standard",
        webhook_id=webhook_id,
        kind=kind,  # type: ignore[arg-type]
        gateway_type=f"payment.{kind}",
        payment_id="pay-1",
        order_id="o-1",
        amount_cents=amount,
        currency="EUR",
        sent_at=datetime.now(UTC),
    )
    cmd = AcceptPaymentWebhook(notice=notice, scheme="standard-webhooks", body="{}", headers={})
    assert not accept_webhook(_bus(engine), cmd).duplicate


def _registry(**changes: Any) -> JobRegistry:
    """The payments group's jobs, process-payment-webhook changed (a quick back-off)."""
    local = JobRegistry()
    declared = jobs.get("process-payment-webhook")
    options = {**declared.options, "backoff": lambda _attempt: 0.2}
    local.add(dataclasses.replace(declared, options=options, **changes))
    local.add(jobs.get("reconcile-payments"))
    return local


def _payments(engine: Engine, broker: EmbeddedBroker, reg: JobRegistry | None = None) -> Any:
    """The payments group under a fresh name (tests.kafka_helpers.fresh_group): the broker
    may be one the other tests share."""
    group = fresh_group(broker.bootstrap_servers, PAYMENTS, reg or jobs)
    return harness(engine, broker.bootstrap_servers, group, reg or jobs, events=registry)


def _status(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(orders.c.status).where(orders.c.id == "o-1")).scalar_one())


def _ledger(engine: Engine) -> list[tuple[str, int]]:
    lg = payment_ledger
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(select(lg.c.kind, lg.c.amount_cents).order_by(lg.c.kind))
        ]  # type: ignore[misc]


def _outcomes(engine: Engine) -> list[str | None]:
    w = payment_webhooks
    with engine.connect() as conn:
        return list(conn.execute(select(w.c.outcome).order_by(w.c.received_at)).scalars())


def _runner(engine: Engine, reg: JobRegistry | None = None) -> JobRunner:
    """The payments group's jobs on consumers.testing (no broker)."""
    return JobRunner(engine, registry=reg or jobs, groups=[PAYMENTS])


def _drained(runner: JobRunner, *, retries: bool = True) -> list[tuple[str | None, str]]:
    return [(r.job, r.outcome) for r in runner.drain(PAYMENTS.name, retries=retries)]


def _run(h: Harness) -> Any:
    """A relay and a payments worker; returns the worker."""
    h.start_relay()
    return h.start_worker()


def test_a_webhook_from_the_server_pays_its_order_once_through_the_payments_group(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    _place(postgres_db)
    env = serve_env(postgres_db.url.render_as_string(hide_password=False), tmp_path)
    body = payment_body("succeeded", "o-1", "pay-1", TOTAL)
    with serving(env, tmp_path / "serve.log") as server:
        assert server.webhook(body, standard_headers(body)).status_code == 200
        # The gateway sends the same payment again under a new delivery id, and redelivers.
        again = standard_headers(body)
        assert server.webhook(body, again).json()["status"] == "accepted"
        assert server.webhook(body, again).json()["status"] == "duplicate"
    with _payments(postgres_db, kafka) as h:
        _run(h)
        wait_for(lambda: None not in _outcomes(postgres_db), timeout_s=60, what="both applied")
    assert _status(postgres_db) == OrderStatus.PAID
    assert _ledger(postgres_db) == [("payment", TOTAL)]
    assert sorted(_outcomes(postgres_db)) == ["applied", "unchanged"]  # type: ignore[type-var]
    assert count_rows(postgres_db, domain_events, domain_events.c.type == "order.paid") == 1


def test_a_job_failing_four_times_then_succeeding_pays_once(postgres_db: Engine) -> None:
    _place(postgres_db)
    attempts: list[int] = []
    real = jobs.get("process-payment-webhook").handler

    def flaky(event: Any, ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        real(event, ctx)  # its effects are rolled back with the failure below
        if ctx.attempt < 5:
            raise ConnectionError("the ledger's disk hiccupped")

    _accept(postgres_db, "msg-1", "succeeded")
    job = "process-payment-webhook"
    outcomes = _drained(_runner(postgres_db, _registry(handler=flaky)))
    assert outcomes == [(job, "retry")] * 4 + [(job, "done")]
    assert _outcomes(postgres_db) == ["applied"]  # the 5th try
    assert attempts == [1, 2, 3, 4, 5]
    assert _status(postgres_db) == OrderStatus.PAID
    assert _ledger(postgres_db) == [("payment", TOTAL)]
    assert failed_rows(postgres_db, PAYMENTS.name) == []


def test_a_job_failing_five_times_is_failed_and_its_retry_needs_a_review(
    postgres_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _place(postgres_db)

    def broken(event: Any, ctx: JobContext) -> None:
        raise ConnectionError("the ledger is away")

    _accept(postgres_db, "msg-1", "succeeded")
    outcomes = _drained(_runner(postgres_db, _registry(handler=broken)))
    assert [o for _, o in outcomes] == ["retry"] * 4 + ["failed"]
    [failed] = failed_rows(postgres_db, PAYMENTS.name)
    assert (failed.job_name, failed.attempts) == ("process-payment-webhook", 5)
    assert _status(postgres_db) == OrderStatus.PENDING

    monkeypatch.setenv("DATABASE_URL", postgres_db.url.render_as_string(hide_password=False))
    assert main(["failed", "retry", str(failed.id)]) == EXIT_USAGE
    assert "--reviewed-by" in capsys.readouterr().err
    assert main(["failed", "retry", str(failed.id), "--reviewed-by", "ann"]) == EXIT_USAGE
    assert len(failed_rows(postgres_db, PAYMENTS.name)) == 1  # nothing retried
    assert (
        main(
            [
                "failed",
                "retry",
                str(failed.id),
                "--reviewed-by",
                "ann",
                "--reason",
                "INC-7 disk back",
            ]
        )
        == EXIT_OK
    )
    assert failed_rows(postgres_db, PAYMENTS.name) == []
    with postgres_db.connect() as conn:
        [audited] = entries(conn, action="failed.retry")
    assert (audited.actor, audited.target, audited.reason) == (
        "ann",
        f"failed_job:{failed.id}",
        "INC-7 disk back",
    )


def test_a_refund_before_its_payment_is_retried_until_the_payment_lands(
    postgres_db: Engine,
) -> None:
    _place(postgres_db)
    _accept(postgres_db, "msg-refund", "refunded", 1000)
    runner = _runner(postgres_db, _registry())
    job = "process-payment-webhook"
    assert _drained(runner, retries=False) == [(job, "retry")]  # a retry
    _accept(postgres_db, "msg-pay", "succeeded")
    # The refund's retry copy comes before the payment in the outbox: it may wait once more.
    after = [outcome for _, outcome in _drained(runner)]
    assert after.count("done") == 2 and set(after) <= {"done", "retry"}
    assert None not in _outcomes(postgres_db)  # both applied
    assert _ledger(postgres_db) == [("payment", TOTAL), ("refund", 1000)]
    assert _status(postgres_db) == OrderStatus.PARTIALLY_REFUNDED  # 1,500 cents still paid
    assert failed_rows(postgres_db, PAYMENTS.name) == []


def test_the_reconciliation_catches_a_hand_made_mismatch(postgres_db: Engine) -> None:
    _place(postgres_db)
    _accept(postgres_db, "msg-1", "succeeded")
    runner = _runner(postgres_db)

    def reconcile(slot: datetime) -> list[tuple[str | None, str]]:
        assert runner.dispatch(
            "reconcile-payments", ScheduledJobDue(job="reconcile-payments", slot=slot)
        )
        return _drained(runner)

    assert _drained(runner) == [("process-payment-webhook", "done")]
    assert _outcomes(postgres_db) == ["applied"]  # paid
    # A clean reconciliation.
    assert reconcile(datetime(2026, 12, 1, 3, tzinfo=UTC)) == [("reconcile-payments", "done")]
    assert failed_rows(postgres_db, PAYMENTS.name) == []
    with postgres_db.begin() as conn:  # someone "fixes" the order by hand
        conn.execute(update(orders).where(orders.c.id == "o-1").values(paid_cents=TOTAL * 2))
    mismatch_run = reconcile(datetime(2026, 12, 2, 3, tzinfo=UTC))
    assert [job for job, outcome in mismatch_run if outcome == "failed"] == ["reconcile-payments"]
    [failed] = failed_rows(postgres_db, PAYMENTS.name)
    assert failed.job_name == "reconcile-payments"
    assert f"order o-1: paid {TOTAL * 2} vs ledger {TOTAL}" in failed.exception_message
    mismatch = domain_events.c.type == "payment.ledger_mismatch"
    assert count_rows(postgres_db, domain_events, mismatch) == 1
