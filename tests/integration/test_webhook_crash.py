"""kill -9 of a dispatcher mid-delivery (every send in flight, none answered): a second
dispatcher takes the deliveries once their leases expire, and every (event, endpoint) is
delivered at least once, always with the same webhook-id."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from outbox.schema_webhooks import webhook_attempts_table as attempts
from tests.outbound_helpers import add_endpoint, deliveries, make
from tests.outbound_receiver import Answer, Receiver

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 6.0  # >= 2 x the child's attempt (0.5 + 1.5 + 1 s): it claims runs


def _until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _child(engine: Engine, owner: str) -> subprocess.Popen[bytes]:
    url = engine.url.render_as_string(hide_password=False)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.outbound_dispatcher_child", url, owner, str(LEASE_S)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_killed_dispatchers_deliveries_are_delivered_by_the_next_one(engine: Engine) -> None:
    gate = threading.Event()
    with Receiver() as receiver:
        for n in range(4):
            # The first request of each endpoint hangs until the first dispatcher is dead.
            receiver.answer(f"/ep{n}", Answer(200, gate=gate), Answer(200))
            add_endpoint(engine, f"ep_{n}", url=receiver.url(f"/ep{n}"))
        now = datetime.now(UTC)
        for n in range(3):
            make(engine, f"ev-{n}", now=now)
        first = _child(engine, "first")
        second = None
        try:
            _until(lambda: len(receiver.received) == 4)  # one in flight per endpoint
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=30) == -signal.SIGKILL
            gate.set()
            # Each endpoint's run of three was leased to the dead dispatcher: held, not lost.
            rows = deliveries(engine)
            assert {r.status for r in rows} == {"delivering"}
            assert {r.lease_owner.split("/")[0] for r in rows} == {"first"}
            second = _child(engine, "second")
            _until(lambda: {r.status for r in deliveries(engine)} == {"delivered"})
        finally:
            gate.set()
            for child in (first, second):
                if child is not None and child.poll() is None:
                    child.kill()
                    child.wait(timeout=30)
        rows = deliveries(engine)
        assert len(rows) == 12
        for row in rows:
            got = receiver.on(f"/ep{row.endpoint_id[3:]}")
            ids = [
                g.headers["webhook-id"] for g in got if row.webhook_id == g.headers["webhook-id"]
            ]
            assert ids, f"{row.endpoint_id} never received {row.event_id}"
        # The four hung sends were sent again (same webhook-id): 16 requests for 12 pairs.
        assert len(receiver.received) == 16
        by_id: dict[str, int] = {}
        for got in receiver.received:
            by_id[got.headers["webhook-id"]] = by_id.get(got.headers["webhook-id"], 0) + 1
        assert sorted(by_id.values()) == [1] * 8 + [2] * 4
        assert set(by_id) == {r.webhook_id for r in rows}
        with engine.connect() as conn:
            logged = conn.execute(select(func.count()).select_from(attempts)).scalar_one()
        assert logged == 12  # the killed dispatcher's sends were never recorded
