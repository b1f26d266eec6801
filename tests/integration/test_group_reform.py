"""A group whose coordinator wedges recovers by itself and keeps its committed offsets.

The embedded broker's coordinator wedges when the leader of a forming generation leaves
(another member's join pending): every later member follows a leader that is gone and is
never assigned. Seen in the chaos run as a worker replaced every 25 s for good. A worker
alone and unassigned past its liveness timeout re-forms the group
(consumers._internal.group_reform).
On a broker that does not wedge the worker is simply assigned: the assertions that matter
(every record handled once, nothing read twice) hold on any broker.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTP
from sqlalchemy import Engine
from structlog.testing import capture_logs

from consumers._internal.group_reform import reform_group, standalone_commit
from consumers.kafka_clients import GroupAdmin
from infra.broker import EmbeddedBroker
from tests.consumer_harness import counting, effects, harness, ping, wait_for
from tests.kafka_helpers import fresh_topic

pytestmark = pytest.mark.integration


def _consumer(bootstrap: str, group: str) -> Any:
    return KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=6000,
    )


def _leader_leaves_mid_join(bootstrap: str, group: str, topics: list[str]) -> None:
    """Member A is assigned (the leader); B starts to join; A leaves instead of rejoining;
    then B gives up too. The group has no member left."""
    leader = _consumer(bootstrap, group)
    leader.subscribe(topics)
    deadline = time.monotonic() + 30
    while not leader.assignment() and time.monotonic() < deadline:
        leader.poll(200)
    assert leader.assignment(), "the first member was never assigned"

    def joiner() -> None:
        other = _consumer(bootstrap, group)
        other.subscribe(topics)
        until = time.monotonic() + 4
        while time.monotonic() < until and not other.assignment():
            other.poll(200)
        other.close()

    thread = threading.Thread(target=joiner)
    thread.start()
    time.sleep(1)  # the joiner's JoinGroup is pending: the group is forming
    leader.close()
    thread.join(30)


def _admin(bootstrap: str) -> Any:
    return GroupAdmin(bootstrap_servers=bootstrap.split(","), client_id="test-reform")


def test_a_group_wedged_by_its_leader_leaving_mid_join_recovers_with_its_offsets(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    bootstrap = kafka.bootstrap_servers
    scope = uuid.uuid4().hex
    registry, group = counting(bootstrap, scope)
    topic = group.topics[0]
    with harness(engine, bootstrap, group, registry) as h:
        h.write([ping(topic, n, key=f"k-{n}") for n in range(30)])
        h.start_relay()
        first = h.start_worker()
        wait_for(lambda: len(effects(engine, scope)) == 30, what="the first 30 handled")
        h.stop(first)
        _leader_leaves_mid_join(bootstrap, group.name, list(group.subscriptions()))
        h.write([ping(topic, n, key=f"k-{n}") for n in range(30, 60)])
        workers = []
        with capture_logs() as logs:
            deadline = time.monotonic() + 120
            while len(effects(engine, scope)) < 60 and time.monotonic() < deadline:
                # Long enough for a join on a loaded machine (CI saw a worker after the
                # re-formation give up at 6 s, before its join completed).
                worker = h.start_worker(liveness_timeout_s=12, liveness_check_s=0.5)
                workers.append(worker)
                # Runs until every record is handled, or it stalls and exits (replaced).
                wait_for(
                    lambda w=worker: (
                        len(effects(engine, scope)) == 60 or w.stats.exit_reason == "stalled"
                    ),
                    timeout_s=60,
                    what="handled or stalled",
                )
                time.sleep(0.5)
    assert effects(engine, scope) == dict.fromkeys(range(60), 1)
    assert len(workers) <= 2, "re-forming the group did not let the next worker in"
    # Nothing was read twice: the committed offsets outlived the re-formed group.
    assert sum(w.stats.duplicates for w in workers) == 0
    reformed = [e for e in logs if e["event"] == "consumer_group_reform"]
    if len(workers) == 2:  # the broker wedged: the first stalled alone and re-formed it
        assert reformed and reformed[0]["outcome"].startswith("group re-formed with")


def test_reform_keeps_the_offsets_of_an_empty_group_and_leaves_one_with_members_alone(
    kafka: EmbeddedBroker,
) -> None:
    bootstrap = kafka.bootstrap_servers
    topic = fresh_topic(bootstrap)
    group = f"g-{uuid.uuid4().hex[:10]}"
    committer = _consumer(bootstrap, group)
    committer.assign([KafkaTP(topic, p) for p in range(3)])
    committer.commit(
        {
            KafkaTP(topic, 0): OffsetAndMetadata(7, "", -1),
            KafkaTP(topic, 2): OffsetAndMetadata(11, "", -1),
        }
    )
    committer.close()
    admin = _admin(bootstrap)
    try:
        outcome = reform_group(admin, group, standalone_commit(bootstrap))
        assert outcome.done and outcome.offsets == 2, outcome
        after = admin.list_group_offsets({group: None})[group]
        assert {(tp.partition, m.offset) for tp, m in after.items()} == {(0, 7), (2, 11)}

        member = _consumer(bootstrap, group)
        member.subscribe([topic])
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(200)
        try:
            kept = reform_group(admin, group, standalone_commit(bootstrap))
            assert not kept.done and "member(s) still in the group" in kept.detail
            after = admin.list_group_offsets({group: None})[group]
            assert {(tp.partition, m.offset) for tp, m in after.items()} == {(0, 7), (2, 11)}
        finally:
            member.close()
    finally:
        admin.close()


def test_members_stuck_in_a_wedged_group_are_let_out_by_a_reform(kafka: EmbeddedBroker) -> None:
    """Two workers of a wedged group, replaced in step, each found the other in it: a
    worker that stalled with members of a group never Stable re-forms it anyway."""
    bootstrap = kafka.bootstrap_servers
    topic = fresh_topic(bootstrap)
    group = f"g-{uuid.uuid4().hex[:10]}"
    committer = _consumer(bootstrap, group)
    committer.assign([KafkaTP(topic, 1)])
    committer.commit({KafkaTP(topic, 1): OffsetAndMetadata(5, "", -1)})
    committer.close()
    _leader_leaves_mid_join(bootstrap, group, [topic])
    stuck = _consumer(bootstrap, group)
    stuck.subscribe([topic])
    until = time.monotonic() + 8
    while time.monotonic() < until and not stuck.assignment():
        stuck.poll(200)
    admin = _admin(bootstrap)
    try:
        outcome = reform_group(admin, group, standalone_commit(bootstrap), stuck_members=True)
        if stuck.assignment():  # a broker that did not wedge: the group is Stable
            assert not outcome.done and "left alone" in outcome.detail, outcome
        else:
            assert outcome.done, outcome
            until = time.monotonic() + 30
            while time.monotonic() < until and not stuck.assignment():
                stuck.poll(200)
            assert stuck.assignment(), "the stuck member never joined the re-formed group"
        after = admin.list_group_offsets({group: None})[group]
        assert {(tp.partition, m.offset) for tp, m in after.items()} == {(1, 5)}
    finally:
        stuck.close()
        admin.close()
