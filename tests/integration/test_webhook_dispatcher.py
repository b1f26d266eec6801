"""The dispatcher end to end against a real local HTTP server (tests/outbound_receiver.py), on
every backend: 200 delivered, 500 then 200 retried on a short schedule (the same webhook-id
both times), 410 disabling the endpoint; one slow receiver holding none of the others; a
stop that lets the send in flight finish. Signed with the official `standardwebhooks`
package and verified with it on the receiver's side."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from standardwebhooks.webhooks import Webhook

from outbound.claims import Claimed
from outbound.dispatcher import Dispatcher
from outbound.ports import SendResult, SigningKey
from tests.outbound_helpers import CONFIG, FailingEngine, add_endpoint, deliveries, endpoint, make
from tests.outbound_receiver import Answer, HttpxSender, Receiver

SECRET = base64.b64encode(b"k" * 32).decode()
# A lease of 60 s outlasts two attempts (5 + 15 + 1 s): the dispatcher claims runs.
FAST = replace(
    CONFIG, schedule_s=(0, 0.2, 0.2, 0.2), poll_interval_s=0.05, concurrency=4, lease_s=60
)


def _keys(claimed: Claimed) -> list[SigningKey]:
    return [SigningKey("v1", b"k" * 32)]


def _sign(keys: list[SigningKey], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    assert keys[0].material == b"k" * 32
    at = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": Webhook(SECRET).sign(webhook_id, at, body),
        "content-type": "application/json",
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def _until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the deliveries did not settle"
        time.sleep(0.05)


def _running(
    engine: Engine, sender: HttpxSender
) -> tuple[Dispatcher, threading.Event, threading.Thread]:
    dispatcher = Dispatcher(engine, sender, _keys, _sign, FAST, "test-1", shards=4)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,))
    thread.start()
    return dispatcher, stop, thread


def test_200_500_then_200_and_410_against_a_real_server(engine: Engine, receiver: Receiver) -> None:
    receiver.answer("/ok", Answer(200))
    receiver.answer("/flaky", Answer(500), Answer(200))
    receiver.answer("/gone", Answer(410))
    for name in ("ok", "flaky", "gone"):
        add_endpoint(engine, f"ep_{name}", url=receiver.url(f"/{name}"))
    make(engine, "ev-1", now=datetime.now(UTC))
    sender = HttpxSender()
    dispatcher, stop, thread = _running(engine, sender)
    try:
        _until(lambda: {r.status for r in deliveries(engine)} <= {"delivered", "cancelled"})
    finally:
        stop.set()
        thread.join(timeout=30)
        sender.close()
    assert not thread.is_alive()
    by = {r.endpoint_id: r for r in deliveries(engine)}
    assert (by["ep_ok"].status, by["ep_ok"].attempts) == ("delivered", 1)
    assert (by["ep_flaky"].status, by["ep_flaky"].attempts) == ("delivered", 2)
    assert (by["ep_gone"].status, by["ep_gone"].last_error) == ("cancelled", "410 Gone")
    assert endpoint(engine, "ep_gone").state == "disabled"
    flaky = receiver.on("/flaky")
    assert len(flaky) == 2
    assert flaky[0].headers["webhook-id"] == flaky[1].headers["webhook-id"]
    assert flaky[0].headers["webhook-id"] == by["ep_flaky"].webhook_id
    for got in receiver.received:
        verified = Webhook(SECRET).verify(got.body, got.headers)
        assert verified["id"] == "ev-1"
    assert dispatcher.delivered == 2


def test_a_slow_receiver_holds_none_of_the_others(engine: Engine, receiver: Receiver) -> None:
    release = threading.Event()
    receiver.answer("/slow", Answer(200, gate=release))
    receiver.answer("/fast", Answer(200))
    add_endpoint(engine, "ep_slow", url=receiver.url("/slow"))
    add_endpoint(engine, "ep_fast", url=receiver.url("/fast"))
    now = datetime.now(UTC)
    for n in range(5):
        make(engine, f"ev-{n}", now=now)
    sender = HttpxSender()
    _, stop, thread = _running(engine, sender)
    try:
        _until(lambda: len(receiver.on("/fast")) == 5)
        _until(lambda: {r.status for r in deliveries(engine) if r.endpoint_id == "ep_fast"}
               == {"delivered"})  # fmt: skip
        # All five of the fast endpoint went while the slow one still holds its first.
        assert len(receiver.on("/slow")) == 1
        slow = [r for r in deliveries(engine) if r.endpoint_id == "ep_slow"]
        # Its run is leased to this dispatcher (outbound.claims); only the first was sent.
        assert {r.status for r in slow} == {"delivering"}
        stop.set()  # the send in flight finishes first: run cannot return before
        thread.join(timeout=0.5)
        assert thread.is_alive()
    finally:
        release.set()
        stop.set()
        thread.join(timeout=30)
        sender.close()
    assert not thread.is_alive()
    slow = [r for r in deliveries(engine) if r.endpoint_id == "ep_slow"]
    assert sum(r.status == "delivered" for r in slow) == 1
    # Stopped: the rest of its run were given back, due at once, no attempt counted.
    rest = [r for r in slow if r.status != "delivered"]
    assert [(r.status, r.attempts, r.lease_owner) for r in rest] == [("pending", 0, None)] * 4


def test_run_once_sends_a_batch_and_records_it(engine: Engine, receiver: Receiver) -> None:
    receiver.answer("/a", Answer(429, retry_after="1"))
    add_endpoint(engine, "ep_a", url=receiver.url("/a"))
    make(engine, "ev-1", now=datetime.now(UTC))
    sender = HttpxSender()
    try:
        dispatcher = Dispatcher(engine, sender, _keys, _sign, FAST, "test-2", shards=4)
        assert dispatcher.run_once() == 1
        assert dispatcher.run_once() == 0  # throttled: waits at least the Retry-After
    finally:
        sender.close()
    (row,) = deliveries(engine)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 429)


class _FlakyEngine(FailingEngine):
    """The real engine, whose next `failures` transactions fail as a lost connection does."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.failures = 0

    def should_fail(self) -> bool:
        if self.failures <= 0:
            return False
        self.failures -= 1
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_database_errors_are_retried_and_never_lose_a_delivery(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.answer("/a", Answer(200))
    add_endpoint(engine, "ep_a", url=receiver.url("/a"))
    clock = _Clock()
    make(engine, "ev-1", now=clock.now)
    flaky = _FlakyEngine(engine)
    sender = HttpxSender()

    class BreakAfterSend:
        def send(self, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
            result = sender.send(url, body, headers)
            flaky.failures = 100  # every try of the record fails
            return result

    try:
        # The claim fails twice, then goes through; the record never does.
        flaky.failures = 2
        broken = Dispatcher(
            flaky, BreakAfterSend(), _keys, _sign, FAST, "t-1",  # type: ignore[arg-type]
            clock, shards=4, backoff_s=(0.01, 0.01, 0.01),
        )  # fmt: skip
        assert broken.run_once() == 1
        assert (broken.delivered, broken.lost) == (0, 1)
        (row,) = deliveries(engine)
        assert row.status == "delivering"  # leased still: nothing was lost
        flaky.failures = 0
        healthy = Dispatcher(flaky, sender, _keys, _sign, FAST, "t-2", clock, shards=4)  # type: ignore[arg-type]
        assert healthy.run_once() == 0  # the lease is live
        clock.now += timedelta(seconds=FAST.lease_s + 1)
        assert healthy.run_once() == 1
    finally:
        sender.close()
    (row,) = deliveries(engine)
    assert (row.status, row.attempts) == ("delivered", 1)
    sent = receiver.on("/a")
    assert len(sent) == 2
    assert {s.headers["webhook-id"] for s in sent} == {row.webhook_id}
