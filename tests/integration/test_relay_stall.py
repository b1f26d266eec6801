"""A relay that gets nowhere (ADR 012): its producer is replaced, its leases go to a relay
that works, `outbox coroner` names it, and its start-up survives database errors."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from outbox import OutboxStatus, outbox_table, relay_instances_table
from outbox.coroner import examine
from outbox.types import utcnow
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_FAILED, EXIT_OK
from relay import BrokerUnavailable, LeaseKeeper, Publisher, Relay, RelayConfig
from relay.errors import PublisherBroken
from tests.fakes import InMemoryPublisher
from tests.kafka_helpers import envelopes, insert, wait_for

pytestmark = pytest.mark.integration
SHARDS = 4


def make_relay(
    engine: Engine, publishers: list[InMemoryPublisher], name: str, **config: object
) -> Relay:
    """A relay whose factory hands out `publishers` in turn (the last one for good)."""
    handed: list[Publisher] = []

    def factory() -> Publisher:
        handed.append(publishers[min(len(handed), len(publishers) - 1)])
        return handed[-1]

    settings = {
        "shards": SHARDS,
        "lease_ttl_s": 1.5,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "poll_max_s": 0.05,
        **config,
    }
    return Relay(engine, factory, RelayConfig(**settings), instance_id=name)  # type: ignore[arg-type]


def statuses(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(outbox_table.c.status)).scalars())


def test_a_producer_without_outcomes_is_replaced_and_the_rows_go_again(engine: Engine) -> None:
    wedged = InMemoryPublisher(topics={"t": 3}, stalled=True)
    working = InMemoryPublisher(topics={"t": 3})
    envs = envelopes("t", keys=3, per_key=3)
    insert(engine, envs, shards=SHARDS)
    relay = make_relay(engine, [wedged, working], "a", send_timeout_s=0.3)

    with capture_logs() as logs:
        stats = relay.run(once=True)

    assert wedged.closed
    assert stats.replaced_publishers == 1
    assert stats.published == len(envs)
    assert stats.unconfirmed == len(envs)  # the first batch: sent, never answered
    assert statuses(engine) == {OutboxStatus.PUBLISHED}
    sent_again = [m.headers[1] for m in working.messages("t")]
    assert sorted(sent_again) == sorted(("ce_id", e.event_id.encode()) for e in envs)
    assert any(e["event"] == "relay_producer_replaced" for e in logs)


def test_a_stuck_relays_shards_are_taken_over_and_the_coroner_names_it_meanwhile(
    engine: Engine,
) -> None:
    stuck = InMemoryPublisher(topics={"t": 3}, stalled=True)
    envs = envelopes("t", keys=6, per_key=3)
    insert(engine, envs, shards=SHARDS)
    # The send timeout is long: only the lease rule can get these rows out.
    # A short shutdown grace: stopped, it lets go of its wedged batch before the join ends
    # (a thread left waiting would log into the next test's output).
    a = make_relay(
        engine, [stuck], "a-stuck", stall_s=1.0, send_timeout_s=600, shutdown_grace_s=0.5
    )
    with capture_logs() as logs:
        a_thread = threading.Thread(target=a.run, daemon=True)
        a_thread.start()
        try:
            wait_for(lambda: any(e["event"] == "relay_stalled" for e in logs), 20, "alone")
            assert len(a.leases.held()) == SHARDS  # alone: nobody could do better
            wait_for(lambda: _stalled(engine), 10, "the heartbeat carries the stall")
            found = _stalled(engine)
            assert [(r.instance_id, r.shards, r.due) for r in found] == [
                ("a-stuck", list(range(SHARDS)), len(envs))
            ]
            assert found[0].last_published_age_s is None
            assert (
                found[0].describe()
                == f"relay a-stuck holds {SHARDS} shards, never published, {len(envs)} due"
            )

            working = InMemoryPublisher(topics={"t": 3})
            b = make_relay(engine, [working], "b-working", stall_s=1.0)
            b_thread = threading.Thread(target=b.run, daemon=True)
            b_thread.start()
            wait_for(lambda: statuses(engine) == {OutboxStatus.PUBLISHED}, 20, "takeover")
            assert not _stalled(engine)
            # After its cool-down it comes back for its share, and while nothing is due
            # (b published everything) it is not stalled.
            wait_for(lambda: any(e["event"] == "relay_rejoined" for e in logs), 20, "rejoin")
            wait_for(a.leases.held, 20, "a holds its share again")
            assert not _stalled(engine)
        finally:
            a.stop()
            a_thread.join(timeout=10)
            if "b" in locals():
                b.stop()
                b_thread.join(timeout=10)
    assert not a_thread.is_alive() and not b_thread.is_alive()
    assert a.stats.step_backs >= 1
    assert a.stats.published == 0
    assert {m.headers[1][1] for m in working.messages("t")} == {e.event_id.encode() for e in envs}
    stepped = [e for e in logs if e["event"] == "relay_stalled_stepping_back"]
    # What it still meant to publish (b's share may already be marked for hand-over).
    assert set(stepped[0]["shards"]) <= set(range(SHARDS))
    assert stepped[0]["shards"]


def _stalled(engine: Engine) -> list:  # type: ignore[type-arg]
    with engine.connect() as conn:
        found = examine(
            conn, utcnow(), older_than=timedelta(minutes=5), lease_ttl_s=1.5, stall_s=1.0
        )
    return found.stalled_relays


def test_coroner_reports_a_relay_that_holds_shards_and_publishes_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("OUTBOX_SHARDS", "16")
    now = utcnow()
    keeper = LeaseKeeper(engine, shards=16, ttl_s=10, instance_id="relay-r")
    keeper.register()
    keeper.tick(
        progress_at=now - timedelta(minutes=3), last_published_at=now - timedelta(minutes=3)
    )
    insert(engine, envelopes("order-events", keys=8, per_key=2), shards=16)
    capsys.readouterr()  # the keeper's log lines

    assert main(["coroner", "--no-kafka", "--json"]) == EXIT_FAILED
    report = json.loads(capsys.readouterr().out)
    assert report["stuck"] is True
    assert (report["old_pending"], report["orphan_shards"]) == (0, [])
    [stalled] = report["stalled_relays"]
    assert (stalled["instance_id"], len(stalled["shards"]), stalled["due"]) == ("relay-r", 16, 16)
    assert 170 < stalled["last_published_age_s"] < 200

    assert main(["coroner", "--no-kafka"]) == EXIT_FAILED
    screen = capsys.readouterr()
    assert "relay relay-r holds 16 shards, last publish 3.0 min ago, 16 due" in " ".join(
        (screen.out + screen.err).split()
    )

    keeper.tick(progress_at=utcnow())  # it got somewhere (or found nothing due)
    capsys.readouterr()
    assert main(["coroner", "--no-kafka", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["stalled_relays"] == []


def test_start_up_retries_database_and_broker_errors(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_terminate_backend during registration or the first tick, a broker gone during
    the topic check: retried with back-off, then the relay publishes."""
    publisher = InMemoryPublisher(topics={"t": 3})
    insert(engine, envelopes("t", keys=2, per_key=2), shards=SHARDS)
    relay = make_relay(engine, [publisher], "a", topics=("t",))
    failures = {"register": 1, "tick": 1, "partitions": 1}

    def failing(name: str, real):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            if failures[name]:
                failures[name] -= 1
                if name == "partitions":
                    raise BrokerUnavailable("listing the topics failed: gone")
                raise OperationalError("INSERT", {}, Exception("terminating connection"))
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(relay.leases, "register", failing("register", relay.leases.register))
    monkeypatch.setattr(relay.leases, "tick", failing("tick", relay.leases.tick))
    monkeypatch.setattr(publisher, "partitions", failing("partitions", publisher.partitions))
    with capture_logs() as logs:
        stats = relay.run(once=True)

    assert failures == {"register": 0, "tick": 0, "partitions": 0}
    assert stats.published == 4
    events = [e["event"] for e in logs]
    assert events.count("relay_database_error") == 2
    assert "relay_broker_unreachable" in events
    with engine.connect() as conn:  # registered once, then left on the way out
        assert list(conn.execute(select(relay_instances_table.c.instance_id))) == []


def test_a_broken_producer_is_replaced_before_it_sends(engine: Engine) -> None:
    """A client in a fatal state (librdkafka after PRODUCER_FENCED) fails every send: the
    relay replaces it instead of retrying it for ever."""
    broken = InMemoryPublisher(topics={"t": 3})
    working = InMemoryPublisher(topics={"t": 3})

    def refuse(messages: object) -> object:
        raise PublisherBroken("the producer hit a fatal error: PRODUCER_FENCED")

    broken.send_batch = refuse  # type: ignore[method-assign,assignment]
    insert(engine, envelopes("t", keys=2, per_key=2), shards=SHARDS)
    relay = make_relay(engine, [broken, working], "a")

    stats = relay.run(once=True)

    assert broken.closed
    assert (stats.replaced_publishers, stats.published) == (1, 4)
    assert statuses(engine) == {OutboxStatus.PUBLISHED}
