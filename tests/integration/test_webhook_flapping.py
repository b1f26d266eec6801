"""A receiver that flaps (random 500s, reset connections, answers past the timeout) for a
while, two `outbox webhooks deliver` processes, one of them killed -9 mid-delivery (whichever
holds claimed deliveries first), and one endpoint disabled mid-run: every (event, endpoint)
pair is delivered at least once, always with the same webhook-id, and nothing reaches the
endpoint once it is disabled.

The flapping lasts OUTBOX_TEST_WEBHOOK_FLAP_S seconds (10 by default; the issue's minute:
OUTBOX_TEST_WEBHOOK_FLAP_S=60).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from domain import CommandBus
from outbound import endpoints
from outbound.config import WebhookConfig
from outbound.secrets import SecretBox
from outbox.schema_webhooks import webhook_deliveries_table as d
from tests.flapping_receiver import FlappingReceiver, count_pairs
from tests.outbound_helpers import make
from tests.scenario import ensure_tenant

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FLAP_S = float(os.environ.get("OUTBOX_TEST_WEBHOOK_FLAP_S", "10"))
KEY = "k1:" + base64.b64encode(os.urandom(32)).decode()
CONFIG = WebhookConfig(allow_http=True)
PATHS = ("/a", "/b", "/c")  # /c is disabled halfway through
EVENTS_PER_S = 6


def _until(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@contextmanager
def _dispatchers(engine: Engine, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "WEBHOOK_ENCRYPTION_KEYS": KEY,
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
        "WEBHOOK_CONNECT_TIMEOUT_S": "0.5",
        "WEBHOOK_TIMEOUT_S": "0.8",  # the receiver's slow answers take 1.5 s
        "WEBHOOK_RETRY_SCHEDULE": "0,0.2,0.5,1,1,2,2,2,2,2,2,2,2,2,2,2",
        "WEBHOOK_BREAKER_COOLDOWN_S": "1",
        "WEBHOOK_LEASE_S": "5",  # >= 2 x (0.5 + 0.8 + 1): runs of deliveries (outbound.claims)
        "LOG_LEVEL": "warning",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "pipeline.cli", "webhooks", "deliver"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def _kill_one_holding_deliveries(engine: Engine, procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """kill -9 the first dispatcher found holding claimed deliveries (mid-delivery: which of
    the two wins the claims is the scheduler's luck); the ids it held, or [] if none did."""
    for proc in procs:
        if proc.poll() is None and (claimed := _claimed_by(engine, proc.pid)):
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
            return claimed
    return []


def _event(engine: Engine, n: int) -> str:
    event_id = f"ev-{n:05d}"
    make(
        engine,
        event_id,
        now=datetime.now(UTC),
        payload={"order_id": f"o-{n}", "amount_cents": 100 + n},
    )
    return event_id


def _claimed_by(engine: Engine, pid: int) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(d.c.id).where(d.c.status == "delivering", d.c.lease_owner.like(f"%:{pid}/%"))
            ).scalars()
        )


def test_a_flapping_receiver_gets_every_pair_once_or_more_under_one_webhook_id(
    server_db: Engine,
) -> None:
    engine = server_db
    ensure_tenant(CommandBus(engine, shards=8), "t-1")
    box = SecretBox.parse([KEY])
    with FlappingReceiver(seed=25, flap_s=0, odds=(0.15, 0.08, 0.05)) as receiver:
        endpoint_of: dict[str, str] = {}
        with engine.begin() as conn:
            for path in PATHS:
                added, secret = endpoints.add(
                    conn, box, tenant_id="t-1", url=receiver.url(path), event_types=["order.*"],
                    description=None, ordered=False, rate_limit_per_s=None, signing="v1",
                    config=CONFIG, now=datetime.now(UTC),
                )  # fmt: skip
                endpoint_of[path] = added.id
                receiver.secret(path, secret)
        events: dict[str, set[str]] = {}  # event id -> the paths subscribed when it was made
        disabled_at: dict[str, float] = {}
        killed: list[int] = []
        with _dispatchers(engine, 2) as procs:
            events[_event(engine, 0)] = set(PATHS)  # once it is delivered, they are up
            _until(lambda: len({g.path for g in receiver.received()}) == len(PATHS), 60)
            receiver.flap_for(FLAP_S)
            started, n = time.monotonic(), 1
            while (elapsed := time.monotonic() - started) < FLAP_S:
                events[_event(engine, n)] = {p for p in PATHS if p not in disabled_at}
                n += 1
                if not killed and elapsed > FLAP_S / 4:
                    killed = _kill_one_holding_deliveries(engine, procs)
                if not disabled_at and elapsed > FLAP_S / 2:
                    with engine.begin() as conn:
                        endpoints.disable(
                            conn, endpoint_of["/c"], "tenant asked", datetime.now(UTC)
                        )
                    disabled_at["/c"] = time.time()
                time.sleep(1 / EVENTS_PER_S)
            expected = {(e, p) for e, paths in events.items() for p in paths if p != "/c"}

            def settled() -> bool:
                return count_pairs(receiver.received(), expected, endpoint_of, {}).lost_count == 0

            _until(settled, timeout_s=90)
            time.sleep(1)  # anything still on its way to /c would show now
        got = receiver.received()
    count = count_pairs(got, expected, endpoint_of, disabled_at)
    assert killed, "no dispatcher ever held a claimed delivery to be killed with"
    assert disabled_at, "the endpoint was never disabled"
    assert count.expected == count.delivered > 2 * len(events) * 0.9, count
    assert count.failures == [], count
    # The flapping happened: every kind of failure came, each retried to a delivery.
    assert {"ok", "500", "reset", "slow"} <= set(count.answers), count.answers
    assert any(g.path == "/c" and g.at < disabled_at["/c"] for g in got)
    with engine.connect() as conn:
        rows = conn.execute(select(d.c.id, d.c.endpoint_id, d.c.status)).all()
    by_id = {r.id: r for r in rows}
    # What the killed dispatcher held was sent again by the other one once its lease ran out.
    assert all(by_id[i].status in ("delivered", "cancelled") for i in killed), killed
    statuses = {(r.endpoint_id == endpoint_of["/c"], r.status) for r in rows}
    assert statuses <= {(False, "delivered"), (True, "delivered"), (True, "cancelled")}, statuses
