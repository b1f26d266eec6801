"""outbox.notifier on PostgreSQL: the relays' wake-up sent after the commit by a thread of
its own (folded), never inside the writers' transactions; a database that is away costs a
logged, dropped wake-up and never blocks a writer."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from domain import CommandBus
from domain.payments import AcceptPaymentWebhook, PaymentNotice, accept_webhook
from infra.db import make_engine
from outbox import WAKEUP_CHANNEL, append
from outbox.notifier import Notifier, notifier_for
from outbox.wakeup import PgListener
from tests.kafka_helpers import envelopes
from tests.scenario import onboard

pytestmark = pytest.mark.integration


class _Recording(Notifier):
    """Records what was asked for and sends nothing: whatever a listener then receives came
    from the writer's own transaction."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.asked: list[str] = []

    def after_commit(self, channel: str = WAKEUP_CHANNEL) -> None:
        self.asked.append(channel)


class _Gated(Notifier):
    """Its first NOTIFY waits for `gate`: what is asked for meanwhile piles up."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    def _send(self, channels: list[str]) -> bool:
        self.batches.append(channels)
        if len(self.batches) == 1:
            self.gate.wait(10)
        return super()._send(channels)


def _listening(engine: Engine, channel: str = WAKEUP_CHANNEL) -> PgListener:
    listener = PgListener(engine, channel)
    assert listener.wait(0.2) is False  # connected and listening; nothing yet
    return listener


def _wait_for(predicate: object, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_after_commit_notifies_the_listeners(postgres_db: Engine) -> None:
    listener, notifier = _listening(postgres_db), Notifier(postgres_db)
    try:
        notifier.after_commit()
        assert listener.wait(5) is True
        assert notifier.sent == 1
        assert notifier.failed == 0
    finally:
        notifier.close()
        listener.close()


def test_what_is_asked_while_a_notify_is_in_flight_goes_in_one_more(postgres_db: Engine) -> None:
    relays, dispatchers = _listening(postgres_db), _listening(postgres_db, "webhook_deliveries")
    notifier = _Gated(postgres_db)
    try:
        notifier.after_commit(WAKEUP_CHANNEL)
        assert _wait_for(lambda: notifier.batches)  # the first NOTIFY is now held
        for _ in range(50):
            notifier.after_commit(WAKEUP_CHANNEL)
            notifier.after_commit("webhook_deliveries")
        notifier.gate.set()
        assert relays.wait(5) is True
        assert dispatchers.wait(5) is True
        assert _wait_for(lambda: notifier.sent == 2)
        both = sorted([WAKEUP_CHANNEL, "webhook_deliveries"])
        assert notifier.batches == [[WAKEUP_CHANNEL], both]
    finally:
        notifier.gate.set()
        notifier.close()
        relays.close()
        dispatchers.close()


def test_close_sends_what_is_pending(postgres_db: Engine) -> None:
    listener, notifier = _listening(postgres_db), Notifier(postgres_db)
    try:
        notifier.after_commit()
        notifier.close()
        assert listener.wait(5) is True
        notifier.after_commit()  # after close: ignored, nothing started again
        assert notifier.sent == 1
    finally:
        listener.close()


def test_a_database_that_is_away_costs_a_dropped_wakeup_not_a_stuck_writer() -> None:
    away = make_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 1}
    )
    notifier = Notifier(away, retry_after_s=0.05)
    try:
        for _ in range(3):
            notifier.after_commit()  # returns at once: the thread meets the failure
        assert _wait_for(lambda: notifier.failed >= 1)
        assert notifier.sent == 0
    finally:
        notifier.close()
        away.dispose()


def test_the_bus_commits_without_notify_and_wakes_the_relays_after(postgres_db: Engine) -> None:
    listener, recording = _listening(postgres_db), _Recording(postgres_db)
    try:
        onboard(CommandBus(postgres_db, shards=4, notifier=recording))
        assert recording.asked == [WAKEUP_CHANNEL]
        assert listener.wait(0.5) is False  # the transaction itself notified nobody

        notifier = Notifier(postgres_db)
        try:
            onboard(CommandBus(postgres_db, shards=4, notifier=notifier), "t-2")
            assert listener.wait(5) is True  # ... the notifier did, after the commit
        finally:
            notifier.close()
    finally:
        listener.close()


def test_without_a_notifier_the_transaction_notifies_as_before(postgres_db: Engine) -> None:
    listener = _listening(postgres_db)
    try:
        onboard(CommandBus(postgres_db, shards=4))
        assert listener.wait(5) is True
        with postgres_db.begin() as conn:  # outbox.append in a caller's transaction too
            append(conn, envelopes("t", keys=1, per_key=1), shards=4)
        assert listener.wait(5) is True
    finally:
        listener.close()


def test_an_accepted_webhook_wakes_the_relays_after_its_commit_once(postgres_db: Engine) -> None:
    recording = _Recording(postgres_db)
    bus = CommandBus(postgres_db, shards=4, notifier=recording)
    listener = _listening(postgres_db)
    cmd = AcceptPaymentWebhook(
        notice=PaymentNotice(
            gateway="standard",
            webhook_id="msg-1",
            gateway_type="payment.succeeded",
            sent_at=datetime(2026, 12, 7, tzinfo=UTC),
            kind="succeeded",
            payment_id="pay-1",
            order_id="o-unknown",
            amount_cents=100,
            currency="EUR",
        ),
        scheme="standard-webhooks",
        body="{}",
        headers={"webhook-id": "msg-1"},
    )
    try:
        assert not accept_webhook(bus, cmd).duplicate
        assert recording.asked == [WAKEUP_CHANNEL]
        assert listener.wait(0.5) is False  # not from inside the transaction
        assert accept_webhook(bus, cmd).duplicate  # a redelivery writes nothing, wakes nobody
        assert recording.asked == [WAKEUP_CHANNEL]
    finally:
        listener.close()


def test_one_notifier_per_engine_and_none_without_notify(
    postgres_db: Engine, tmp_path: object
) -> None:
    assert notifier_for(postgres_db) is notifier_for(postgres_db)
    sqlite = make_engine(f"sqlite:///{tmp_path}/n.db")
    try:
        assert notifier_for(sqlite) is None
        with pytest.raises(ValueError, match="PostgreSQL"):
            Notifier(sqlite)
    finally:
        sqlite.dispose()
