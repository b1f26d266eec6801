"""Wake-ups on PostgreSQL: a commit that adds outbox rows notifies the listening relays."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, select

from domain import CommandBus
from outbox import OutboxStatus, append, outbox_table
from outbox.wakeup import PgListener
from relay import Relay, RelayConfig
from tests.fakes import InMemoryPublisher
from tests.kafka_helpers import envelopes
from tests.scenario import onboard

pytestmark = pytest.mark.integration


def test_a_command_commit_notifies_and_a_rollback_does_not(postgres_db: Engine) -> None:
    listener = PgListener(postgres_db)
    try:
        assert listener.wait(0.2) is False  # connects and listens; nothing yet
        with postgres_db.begin() as conn:  # rolled back: no notification
            append(conn, envelopes("t", keys=1, per_key=1), shards=4)
            conn.rollback()
        assert listener.wait(0.3) is False

        onboard(CommandBus(postgres_db, shards=4))  # the unit of work's single statement
        assert listener.wait(5) is True

        with postgres_db.begin() as conn:  # outbox.append notifies too
            append(conn, envelopes("t", keys=1, per_key=1), shards=4)
        assert listener.wait(5) is True
    finally:
        listener.close()


def test_an_idle_relay_is_woken_by_the_commit_not_by_its_poll(postgres_db: Engine) -> None:
    publisher = InMemoryPublisher(topics={"t": 3, "tenant-events": 3})
    # A 60 s poll ceiling: only the notification can explain a prompt publish.
    config = RelayConfig(shards=4, poll_min_s=60, poll_max_s=60, lease_ttl_s=5)
    relay = Relay(postgres_db, lambda: publisher, config)
    worker = threading.Thread(target=relay.run, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not relay.leases.held() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the relay is now waiting on LISTEN
        committed = time.monotonic()
        with postgres_db.begin() as conn:
            append(conn, envelopes("t", keys=1, per_key=1), shards=4)
        while time.monotonic() - committed < 20:
            with postgres_db.connect() as conn:
                status = conn.execute(select(outbox_table.c.status)).scalar()
            if status == OutboxStatus.PUBLISHED:
                break
            time.sleep(0.01)
        waited = time.monotonic() - committed
    finally:
        relay.stop()
        worker.join(timeout=10)
    assert status == OutboxStatus.PUBLISHED
    assert waited < 20  # far below the 60 s poll
